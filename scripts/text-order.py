#!/usr/bin/env python3
"""Which functions of a binary a run touched, as a lld symbol-ordering file.

    text-order.py mapped PID BINARY_COPY OUT_PAGES
    text-order.py order BINARY_COPY UNSTRIPPED_BINARY MAPPED_PAGES OUT

`mapped` writes the page indexes of BINARY_COPY that process PID has mapped (its page table,
/proc/PID/pagemap): what a long-lived shim keeps resident. `order` reads which pages of
BINARY_COPY are in the page cache: the copy ran from a file system without read-ahead (see
scripts/order-shim-text), so these are the pages any process of the run touched, the
container's set-up in forked children included. UNSTRIPPED_BINARY is the same build with its
symbol table. OUT gets one symbol per line: first the functions
on pages the long-lived shim had mapped, then the other touched ones, each in address order.
"""

import ctypes
import mmap
import os
import subprocess
import sys

PAGE = os.sysconf("SC_PAGE_SIZE")


def cached_pages(path):
    """Indexes of the file's pages that are in the page cache (mincore(2))."""
    size = os.path.getsize(path)
    n = (size + PAGE - 1) // PAGE
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap")
        vec = (ctypes.c_ubyte * n)()
        if libc.mincore(addr, size, vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore")
        libc.munmap(addr, size)
    finally:
        os.close(fd)
    return {i for i in range(n) if vec[i] & 1}


def text_segment(binary):
    """(vaddr, file offset, size) of the executable LOAD segment."""
    out = subprocess.run(["readelf", "-lW", binary], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "LOAD" and "E" in f[6:-1]:
            return int(f[2], 16), int(f[1], 16), int(f[5], 16)
    raise SystemExit(f"{binary}: no executable LOAD segment")


def functions(binary):
    """(start vaddr, size, raw symbol name) of every function with a size."""
    out = subprocess.run(["nm", "-S", "--defined-only", binary], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        f = line.split()
        if len(f) == 4 and f[2] in "tTwW":
            yield int(f[0], 16), int(f[1], 16), f[3]


def mapped_pages(pid, path):
    """Page indexes of the file at `path` that process `pid` has present in its page table."""
    path = os.path.realpath(path)
    pages = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            f = line.split()
            if len(f) < 6 or f[5] != path:
                continue
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            first_page = int(f[2], 16) // PAGE
            pagemap.seek(lo // PAGE * 8)
            data = pagemap.read((hi - lo) // PAGE * 8)
            for i in range(len(data) // 8):
                entry = int.from_bytes(data[i * 8:i * 8 + 8], "little")
                if entry >> 63 & 1:
                    pages.add(first_page + i)
    return pages


def order(copy, unstripped, mapped_file, out):
    touched = cached_pages(copy)
    with open(mapped_file) as f:
        mapped = {int(x) for x in f.read().split()}
    vaddr, offset, _ = text_segment(unstripped)
    first_tier, second_tier = [], []
    for start, size, name in functions(unstripped):
        pages = range((start - vaddr + offset) // PAGE, (start + max(size, 1) - 1 - vaddr + offset) // PAGE + 1)
        if any(p in mapped for p in pages):
            first_tier.append((start, size, name))
        elif any(p in touched for p in pages):
            second_tier.append((start, size, name))
    with open(out, "w") as f:
        for tier in (sorted(first_tier), sorted(second_tier)):
            for _, _, name in tier:
                f.write(f"{name}\n")
    kib = lambda t: sum(s for _, s, _ in t) // 1024
    print(f"{len(touched)} pages of the binary touched, {len(mapped)} mapped by the shim; "
          f"{len(first_tier)} functions ({kib(first_tier)} KiB) first, "
          f"{len(second_tier)} ({kib(second_tier)} KiB) after; written to {out}")


def main():
    if sys.argv[1:2] == ["mapped"]:
        pid, path, out = sys.argv[2:5]
        with open(out, "w") as f:
            f.write("\n".join(str(p) for p in sorted(mapped_pages(pid, path))) + "\n")
    elif sys.argv[1:2] == ["order"]:
        order(*sys.argv[2:6])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
