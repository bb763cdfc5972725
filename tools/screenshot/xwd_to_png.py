"""Converts an X window dump (`xwd -root`) of a 24/32-bit TrueColor display to PNG.

With `--check` instead of a target it only verifies that something was drawn (CI's smoke
test of the real window) and exits non-zero for a blank screen.

Used to take the README's studio screenshot under Xvfb:
    Xvfb :99 -screen 0 1280x800x24 & DISPLAY=:99 foley --model DIR &
    DISPLAY=:99 xwd -root -silent > shot.xwd && python3 tools/screenshot/xwd_to_png.py shot.xwd shot.png
"""

import struct
import sys
import zlib


def main(source: str, target: str) -> None:
    data = open(source, "rb").read()
    fields = struct.unpack(">25I", data[:100])
    header_size, width, height = fields[0], fields[4], fields[5]
    byte_order, bits_per_pixel, bytes_per_line, ncolors = fields[7], fields[11], fields[12], fields[19]
    if bits_per_pixel not in (24, 32):
        raise SystemExit(f"only 24 or 32 bits per pixel are supported, got {bits_per_pixel}")
    step = bits_per_pixel // 8
    offset = header_size + ncolors * 12
    rows = []
    for y in range(height):
        line = data[offset + y * bytes_per_line : offset + y * bytes_per_line + width * step]
        row = bytearray()
        for x in range(width):
            pixel = line[x * step : x * step + step]
            b, g, r = (pixel[0], pixel[1], pixel[2]) if byte_order == 0 else (pixel[-1], pixel[-2], pixel[-3])
            row += bytes((r, g, b))
        rows.append(b"\x00" + bytes(row))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    if target == "--check":
        pixels = b"".join(row[1:] for row in rows)
        distinct = len({pixels[i : i + 3] for i in range(0, len(pixels), 3 * 97)})
        print(f"{width}x{height}, {distinct} distinct colours sampled")
        raise SystemExit(0 if distinct > 8 else "the screen is blank: nothing was rendered")
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")
    open(target, "wb").write(png)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
