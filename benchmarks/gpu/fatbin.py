"""Copy a CUDA shared library keeping only one GPU architecture's code.

    python benchmarks/gpu/fatbin.py SRC.so DST.so 90

ONNX Runtime's CUDA provider carries machine code for sm_75, 80, 86, 89, 90 and 120
(284 MB); a lease moves 64 MiB per call, and an H100 / H200 runs sm_90 only. Every
fatbin blob in the library (magic 0xBA55ED50: 16-byte header, then entries of a header
and a payload, the architecture at byte 28 of an entry's header) is rewritten in place:
the entries for the kept architecture (and any PTX) move to the blob's front, its size
field shrinks to them, the rest of the blob is zeroed. Blob addresses do not change, so
the library's own pointers to them stay valid. Blobs with no entry for the architecture
(sm_120-only kernels) are left as they are.
"""

from __future__ import annotations

import mmap
import shutil
import struct
import sys

MAGIC = struct.pack("<I", 0xBA55ED50)
PTX = 1


def strip(src: str, dst: str, arch: int) -> tuple[int, int]:
    shutil.copyfile(src, dst)
    kept = dropped = 0
    with open(dst, "r+b") as f, mmap.mmap(f.fileno(), 0) as data:
        pos = 0
        while (i := data.find(MAGIC, pos)) >= 0:
            _, header, size = struct.unpack_from("<HHQ", data, i + 4)
            if header != 16:  # the magic bytes inside something else
                pos = i + 4
                continue
            start = e = i + header
            end = start + size
            out = bytearray()
            while e < end:
                kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, e)
                entry_arch = struct.unpack_from("<I", data, e + 28)[0]
                if kind == PTX or entry_arch == arch:
                    out += data[e:e + entry_header + payload]
                    kept += payload
                else:
                    dropped += payload
                e += entry_header + payload
            if e != end:
                raise SystemExit(f"{src}: fatbin blob at {i} does not parse (entries end at {e}, not {end})")
            if out:
                data[start:end] = bytes(out) + bytes(size - len(out))
                struct.pack_into("<Q", data, i + 8, len(out))
            pos = end
        data.flush()
    return kept, dropped


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    kept, dropped = strip(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    print(f"{sys.argv[2]}: kept {kept / 1e6:.1f} MB of sm_{sys.argv[3]} code, dropped {dropped / 1e6:.1f} MB")
