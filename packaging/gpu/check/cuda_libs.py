#!/usr/bin/env python3
"""Prints, ':'-joined, every folder of python3's ``nvidia`` wheels (PyTorch's CUDA libraries) that holds
one of the CUDA 13 libraries a CUDA build of Foley loads: cuBLAS, cuBLASLt, cuRAND, the runtime."""

import os

import nvidia

WANTED = ("libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libcudart.so.13")

found = []
for base in nvidia.__path__:
    for folder, _, files in os.walk(base):
        if any(name in files for name in WANTED) and folder not in found:
            found.append(folder)
print(":".join(found))
