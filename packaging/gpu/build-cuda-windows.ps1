<#
.SYNOPSIS
  CUDA build of Foley for Windows x64, packaged as an installer:
  `cargo build --release --features cuda,cudnn`, then packaging\windows\build-installer.ps1.

.DESCRIPTION
  packaging\gpu\build-cuda-windows.ps1                      # cuda + cudnn, MSI, sm_80 PTX
  packaging\gpu\build-cuda-windows.ps1 -NoCudnn             # cuda only
  packaging\gpu\build-cuda-windows.ps1 -ComputeCap 90 -Format nsis

  Prerequisites (installed the normal way, nothing is downloaded by this script):
    * NVIDIA CUDA Toolkit 13.x for Windows (its installer sets CUDA_PATH and puts nvcc on PATH);
      the driver on the machines that run the build must support that CUDA version.
    * for -Cudnn (default): cuDNN 9 for CUDA 13 (the Windows installer, or the zip with its bin,
      include and lib copied into the toolkit folder); CUDNN_PATH pointing at it if it is elsewhere.
    * Visual Studio Build Tools with the C++ workload (nvcc uses cl.exe; run from a
      "Developer PowerShell for VS" or have cl.exe on PATH), Rust (MSVC toolchain).
  CUDA_COMPUTE_CAP picks the PTX target of candle's kernels. PTX is JIT-compiled forward to newer
  GPUs but not backward, so a build for users should name the oldest architecture it supports
  (80 = Ampere, the default here; 75 = Turing; 90 = Hopper).

  The build goes to its own target dir (<target>\cuda) so the CPU build stays, and the installer
  is named ...-cuda.msi / ...-cuda-setup.exe. It uses the same product identifier as the CPU
  installer, so installing one replaces the other.

  Runtime: foley.exe then needs cublas64_13.dll, cublasLt64_13.dll, curand64_10.dll,
  cudart64_13.dll (and cudnn*64_9.dll with cudnn) on PATH, i.e. the CUDA toolkit (or its runtime
  redistributables) and cuDNN installed on the user's machine; the installer does not bundle them
  (they are several hundred MB). `foley --version` prints the compiled-in backend.

  Not run: written on a Linux machine without Windows or a GPU.
#>
[CmdletBinding()]
param(
  [switch] $NoCudnn,
  [string] $ComputeCap = "80",
  [ValidateSet("wix", "nsis")] [string] $Format = "wix"
)
$ErrorActionPreference = "Stop"
Set-StrictMode -Version Latest
$root = Resolve-Path (Join-Path $PSScriptRoot "..\..")
Set-Location $root

if (-not $env:CUDA_PATH) { throw "CUDA_PATH is not set: install the CUDA Toolkit for Windows first" }
if (-not (Get-Command nvcc -ErrorAction SilentlyContinue)) {
  $env:PATH = (Join-Path $env:CUDA_PATH "bin") + ";" + $env:PATH
}
if (-not (Get-Command nvcc -ErrorAction SilentlyContinue)) { throw "nvcc not found under $env:CUDA_PATH\bin" }
if (-not (Get-Command cl.exe -ErrorAction SilentlyContinue)) {
  throw "cl.exe not on PATH: run this from a Developer PowerShell for Visual Studio (nvcc needs the MSVC compiler)"
}
& nvcc --version
$env:CUDA_COMPUTE_CAP = $ComputeCap

$features = @("cuda")
if (-not $NoCudnn) {
  $features += "cudnn"
  if ($env:CUDNN_PATH) {
    # cudarc looks for cudnn.lib in the CUDA dirs; add cuDNN's own lib dir when it is elsewhere.
    $cudnnLib = Get-ChildItem -Path $env:CUDNN_PATH -Recurse -Filter cudnn.lib | Select-Object -First 1
    if ($cudnnLib) { $env:RUSTFLAGS = ("$env:RUSTFLAGS -L " + $cudnnLib.DirectoryName).Trim() }
  }
}

$metadata = cargo metadata --format-version 1 --no-deps | ConvertFrom-Json
$env:CARGO_TARGET_DIR = Join-Path $metadata.target_directory "cuda"

$installer = & (Join-Path $PSScriptRoot "..\windows\build-installer.ps1") -Format $Format -Features $features -Suffix cuda |
  Select-Object -Last 1
Write-Output $installer
