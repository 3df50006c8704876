// Shared pieces of the wgmma kernels: types, the unswizzled K-major shared-memory layout and the
// 64-bit matrix descriptor (docs/gpu.md#descriptor; PTX ISA "matrix descriptor").
#pragma once

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

// K-major, no swizzle: byte of (row r, k) in a 32-deep tile is
// (r / 8) * SBO + (k / 16) * LBO + (r % 8) * 16 + (k % 16): core matrices of 8 rows x 16 bytes.
#define LBO 128
#define SBO 256

__device__ __forceinline__ int tile_offset(int r, int k) {
  return (r >> 3) * SBO + (k >> 4) * LBO + (r & 7) * 16 + (k & 15);
}

// Start address, LBO and SBO in 16-byte units at bits 0-13, 16-29 and 32-45; base offset 0
// (bits 49-51); swizzle mode 0 = none (bits 62-63).
__device__ __forceinline__ u64 make_desc(const void* smem) {
  u32 addr = (u32)__cvta_generic_to_shared(smem);
  return (u64)((addr >> 4) & 0x3FFF) | ((u64)((LBO >> 4) & 0x3FFF) << 16) |
         ((u64)((SBO >> 4) & 0x3FFF) << 32);
}
