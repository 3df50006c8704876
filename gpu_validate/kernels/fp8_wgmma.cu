// FP8 dot-product probes through Hopper's wgmma (sm_90a): QGMMA in SASS.
//
// Each CTA (one warpgroup, 128 threads) computes 8 independent dot products
// d[i] = sum_k a[i][k] * b[i][k] + c[i] for rows i0..i0+7: A rows 0..7 of the m64n8k32 tile hold
// a[i0..i0+7], B column n holds b[i0+n], and the results sit on the diagonal D[r][r]; every
// other A row is zero. K runs as a chain of k32 instructions accumulating in the same registers
// (scale-d = 1), exactly as the hardware chains blocks. a, b: (rows, K) FP8 codes, K % 32 == 0.
// c, d: fp32 (f32 accumulator) or raw fp16 bits (f16 accumulator).
//
// Layouts (docs/gpu.md#layouts): lane = tid % 32, g = lane >> 2, t = lane & 3, w = warp.
//  f32 accumulator: d[v] holds row 16w + g + 8*(v >> 1), column 2t + (v & 1).
//  f16 accumulator: register u holds row 16w + g + 8u, columns 2t (low half) and 2t + 1 (high).
//  Shared operands, K-major, no swizzle: byte of (row r, k) in a 32-deep tile is
//  (r / 8) * SBO + (k / 16) * LBO + (r % 8) * 16 + (k % 16) with LBO = 128, SBO = 256.
//  Register A (per warp, rows relative to 16w): a0 = A[g][4t..4t+3], a1 = A[g+8][4t..],
//  a2 = A[g][16+4t..], a3 = A[g+8][16+4t..] (byte j = k index 4t + j).

#include "wgmma_common.cuh"

__device__ __forceinline__ u32 pack4(const u8* p) {
  return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

// Stage the k32 block k0 of rows i0..i0+7: A into a 64-row tile (rows 8..63 zero), B into an
// 8-row tile; then make the generic-proxy writes visible to the async proxy.
__device__ __forceinline__ void stage(u8* sa, u8* sb, const u8* a, const u8* b, int rows, int K,
                                      int i0, int k0, bool with_a) {
  int tid = threadIdx.x;
  if (with_a) {
    for (int idx = tid; idx < 64 * 32; idx += 128) {
      int r = idx >> 5, k = idx & 31;
      sa[tile_offset(r, k)] = (r < 8 && i0 + r < rows) ? a[(size_t)(i0 + r) * K + k0 + k] : 0;
    }
  }
  for (int idx = tid; idx < 8 * 32; idx += 128) {
    int n = idx >> 5, k = idx & 31;
    sb[tile_offset(n, k)] = (i0 + n < rows) ? b[(size_t)(i0 + n) * K + k0 + k] : 0;
  }
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();
}

__device__ __forceinline__ void register_a(const u8* a, int rows, int K, int i0, int k0,
                                           u32& a0, u32& a2) {
  int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  a0 = 0; a2 = 0;
  if ((threadIdx.x >> 5) == 0 && i0 + g < rows) {
    const u8* row = a + (size_t)(i0 + g) * K + k0;
    a0 = pack4(row + 4 * t);
    a2 = pack4(row + 16 + 4 * t);
  }
}

#define WAIT_ALL()                                                          \
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");          \
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");          \
  __syncthreads();

// ---- f32 accumulator --------------------------------------------------------------------------
#define WGMMA_F32(NAME, AT, BT, REG_A)                                                        \
extern "C" __global__ void __launch_bounds__(128) NAME(const u8* a, const u8* b, const float* c, \
                                                       float* d, int rows, int K) {          \
  __shared__ __align__(128) u8 sa[2048];                                                      \
  __shared__ __align__(128) u8 sb[256];                                                       \
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;         \
  int i0 = blockIdx.x * 8;                                                                    \
  float acc[4];                                                                               \
  for (int v = 0; v < 4; ++v) {                                                               \
    int row = 16 * warp + g + 8 * (v >> 1), col = 2 * t + (v & 1);                            \
    acc[v] = (row == col && i0 + row < rows) ? c[i0 + row] : 0.0f;                            \
  }                                                                                           \
  for (int k0 = 0; k0 < K; k0 += 32) {                                                        \
    stage(sa, sb, a, b, rows, K, i0, k0, !REG_A);                                             \
    u64 db = make_desc(sb);                                                                   \
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");                                 \
    if (REG_A) {                                                                              \
      u32 a0, a2, zero = 0;                                                                   \
      register_a(a, rows, K, i0, k0, a0, a2);                                                 \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %9, 0;\n"                                \
                   "wgmma.mma_async.sync.aligned.m64n8k32.f32." AT "." BT                     \
                   " {%0, %1, %2, %3}, {%4, %5, %6, %7}, %8, p, 1, 1;\n}\n"                   \
                   : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])                   \
                   : "r"(a0), "r"(zero), "r"(a2), "r"(zero), "l"(db), "r"(1));                \
    } else {                                                                                  \
      u64 da = make_desc(sa);                                                                 \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"                                \
                   "wgmma.mma_async.sync.aligned.m64n8k32.f32." AT "." BT                     \
                   " {%0, %1, %2, %3}, %4, %5, p, 1, 1;\n}\n"                                 \
                   : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])                   \
                   : "l"(da), "l"(db), "r"(1));                                               \
    }                                                                                         \
    WAIT_ALL()                                                                                \
  }                                                                                           \
  for (int v = 0; v < 4; ++v) {                                                               \
    int row = 16 * warp + g + 8 * (v >> 1), col = 2 * t + (v & 1);                            \
    if (row == col && i0 + row < rows) d[i0 + row] = acc[v];                                  \
  }                                                                                           \
}

// ---- f16 accumulator (two fp16 values per 32-bit register) ------------------------------------
#define WGMMA_F16(NAME, AT, BT, REG_A)                                                        \
extern "C" __global__ void __launch_bounds__(128) NAME(const u8* a, const u8* b, const u16* c, \
                                                       u16* d, int rows, int K) {            \
  __shared__ __align__(128) u8 sa[2048];                                                      \
  __shared__ __align__(128) u8 sb[256];                                                       \
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;         \
  int i0 = blockIdx.x * 8;                                                                    \
  u32 acc[2];                                                                                 \
  for (int u = 0; u < 2; ++u) {                                                               \
    int row = 16 * warp + g + 8 * u;                                                          \
    u32 lo = (row == 2 * t && i0 + row < rows) ? c[i0 + row] : 0;                             \
    u32 hi = (row == 2 * t + 1 && i0 + row < rows) ? c[i0 + row] : 0;                         \
    acc[u] = lo | (hi << 16);                                                                 \
  }                                                                                           \
  for (int k0 = 0; k0 < K; k0 += 32) {                                                        \
    stage(sa, sb, a, b, rows, K, i0, k0, !REG_A);                                             \
    u64 db = make_desc(sb);                                                                   \
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");                                 \
    if (REG_A) {                                                                              \
      u32 a0, a2, zero = 0;                                                                   \
      register_a(a, rows, K, i0, k0, a0, a2);                                                 \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %7, 0;\n"                                \
                   "wgmma.mma_async.sync.aligned.m64n8k32.f16." AT "." BT                     \
                   " {%0, %1}, {%2, %3, %4, %5}, %6, p, 1, 1;\n}\n"                           \
                   : "+r"(acc[0]), "+r"(acc[1])                                               \
                   : "r"(a0), "r"(zero), "r"(a2), "r"(zero), "l"(db), "r"(1));                \
    } else {                                                                                  \
      u64 da = make_desc(sa);                                                                 \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %4, 0;\n"                                \
                   "wgmma.mma_async.sync.aligned.m64n8k32.f16." AT "." BT                     \
                   " {%0, %1}, %2, %3, p, 1, 1;\n}\n"                                         \
                   : "+r"(acc[0]), "+r"(acc[1]) : "l"(da), "l"(db), "r"(1));                  \
    }                                                                                         \
    WAIT_ALL()                                                                                \
  }                                                                                           \
  for (int u = 0; u < 2; ++u) {                                                               \
    int row = 16 * warp + g + 8 * u;                                                          \
    if (i0 + row < rows && row < 8) {                                                         \
      if (row == 2 * t) d[i0 + row] = (u16)(acc[u] & 0xFFFF);                                 \
      if (row == 2 * t + 1) d[i0 + row] = (u16)(acc[u] >> 16);                                \
    }                                                                                         \
  }                                                                                           \
}

#define ALL_FORMS(AT, BT)                                          \
  WGMMA_F32(wgmma_f32_##AT##_##BT##_smem, #AT, #BT, false)         \
  WGMMA_F32(wgmma_f32_##AT##_##BT##_rega, #AT, #BT, true)          \
  WGMMA_F16(wgmma_f16_##AT##_##BT##_smem, #AT, #BT, false)         \
  WGMMA_F16(wgmma_f16_##AT##_##BT##_rega, #AT, #BT, true)

ALL_FORMS(e4m3, e4m3)
ALL_FORMS(e4m3, e5m2)
ALL_FORMS(e5m2, e4m3)
ALL_FORMS(e5m2, e5m2)
