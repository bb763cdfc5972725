<#
.SYNOPSIS
  Builds the Windows installer for Foley with cargo-packager: an .msi (WiX, the default) or an
  NSIS setup .exe.

.DESCRIPTION
  packaging\windows\build-installer.ps1                    # CPU build -> foley_VERSION_x64_en-US.msi
  packaging\windows\build-installer.ps1 -Format nsis       # -> foley_VERSION_x64-setup.exe
  packaging\windows\build-installer.ps1 -Features cuda,cudnn -Suffix cuda   # GPU build (see packaging\gpu)
  packaging\windows\build-installer.ps1 -NoBuild           # package the release binary already built

  Prints the installer's path last. Output goes to the cargo release dir
  ($env:CARGO_TARGET_DIR\release or target\release).

  What the installer does (cargo-packager 0.11.8's templates, src/package/wix/main.wxs and
  src/package/nsis/installer.nsi, reviewed for this):
    MSI : per-machine install of foley.exe into Program Files\Foley (the installer asks for
          admin rights; the folder can be changed), a Start-menu folder "Foley" with a "Foley"
          shortcut carrying the icon from packaging\icons\foley.ico and an "Uninstall Foley"
          shortcut, a desktop shortcut, the same icon in Apps & features (uninstall from there
          too), a "Launch Foley" box on the last page. The UpgradeCode is derived from the
          identifier, so a newer version replaces an older one.
    NSIS: per-user install (installer-mode = currentUser, no admin prompt) into
          %LOCALAPPDATA%\Foley, Start-menu shortcut, uninstaller (uninstall.exe, also listed in
          Apps & features), optional removal of %APPDATA%\Foley (library and settings).
          The NSIS shortcut shows foley.exe's own icon, which is the generic one until an icon
          is embedded in the exe (see packaging\README.md, "Known gaps").

  Requirements: Windows 10/11 x64, Rust (MSVC toolchain) with Visual Studio Build Tools (C++
  workload), network access the first time: `cargo install cargo-packager`, and cargo-packager
  downloads WiX 3.11 / NSIS 3.09 from GitHub into its tools cache. The MSI build also needs the
  .NET Framework 3.5 feature that WiX 3 uses (Windows Features > .NET Framework 3.5).
  Config: [package.metadata.packager] in Cargo.toml.
  Signing: none configured; set [package.metadata.packager.windows] certificate-thumbprint,
  digest-algorithm = "sha256" and timestamp-url to sign with signtool.
#>
[CmdletBinding()]
param(
  [ValidateSet("wix", "nsis")] [string] $Format = "wix",
  [string[]] $Features = @(),
  [string] $Suffix = "",
  [switch] $NoBuild
)
$ErrorActionPreference = "Stop"
Set-StrictMode -Version Latest
$root = Resolve-Path (Join-Path $PSScriptRoot "..\..")
Set-Location $root

function Invoke-Checked {
  param([string] $Exe, [string[]] $Arguments)
  & $Exe @Arguments
  if ($LASTEXITCODE -ne 0) { throw "$Exe $($Arguments -join ' ') failed with exit code $LASTEXITCODE" }
}

if (-not (Select-String -Path Cargo.toml -Pattern '^\[package\.metadata\.packager\]' -Quiet)) {
  throw "Cargo.toml has no [package.metadata.packager]"
}
$version = (Select-String -Path Cargo.toml -Pattern '^version\s*=\s*"([^"]+)"' | Select-Object -First 1).Matches[0].Groups[1].Value

if (-not $NoBuild) {
  $cargoArgs = @("build", "--release", "--locked")
  if ($Features.Count -gt 0) { $cargoArgs += @("--features", ($Features -join ",")) }
  Invoke-Checked cargo $cargoArgs
}

if (-not (Get-Command cargo-packager -ErrorAction SilentlyContinue)) {
  Write-Host "installing cargo-packager (cargo install cargo-packager --locked)"
  Invoke-Checked cargo @("install", "cargo-packager", "--locked", "--version", "0.11.8")
}

Invoke-Checked cargo @("packager", "--release", "--formats", $Format)

$metadata = cargo metadata --format-version 1 --no-deps | ConvertFrom-Json
$release = Join-Path $metadata.target_directory "release"
& (Join-Path $release "foley.exe") --version
if ($LASTEXITCODE -ne 0) { throw "the packaged foley.exe does not run" }

if ($Format -eq "wix") {
  $installer = Get-ChildItem -Path $release -Filter "foley_${version}_*.msi" | Sort-Object LastWriteTime | Select-Object -Last 1
} else {
  $installer = Get-ChildItem -Path $release -Filter "foley_${version}_*-setup.exe" | Sort-Object LastWriteTime | Select-Object -Last 1
}
if (-not $installer) { throw "cargo packager wrote no $Format installer into $release" }
$path = $installer.FullName
if ($Suffix) {
  $renamed = Join-Path $installer.DirectoryName ($installer.BaseName + "-" + $Suffix + $installer.Extension)
  Move-Item -Force $path $renamed
  $path = $renamed
}
Write-Output $path
