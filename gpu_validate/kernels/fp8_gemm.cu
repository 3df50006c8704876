// A multi-instruction FP8 GEMM on Hopper (sm_90a) with software promotion, as CUTLASS /
// DeepGEMM / cuBLAS run it: y = sum over K-chunks of epilogue(tensor-core partial, scales).
//
// y (M, N) = x (M, K) @ w (K, N); x as FP8 codes row-major (K contiguous), w given transposed as
// wt (N, K) (K-major, as wgmma FP8 requires). Each CTA (one warpgroup) computes a 64 x 8 tile with
// wgmma m64n8k32, the tensor-core partial accumulating over `promo` elements of K (a multiple of
// 32; promo = K is fast accumulation); then on the CUDA cores, in IEEE FP32 with explicit
// round-to-nearest intrinsics (no contraction, no flush to zero):
//   mode 0 "deepgemm": acc = fma(sa*sb, p, acc)     mode 1 "1d1d": acc = fma(p*sa, sb, acc)
//   mode 2 "2d1d":     acc = fma(p*sb, sa, acc)     mode 3 "2d2d": acc = fma(p, sa*sb, acc)
//   mode 4 "mul_add":  acc = acc + (p*sa)*sb
// sa (M, nK), sb (nK, N): fp32 dequantisation scales per K-group of `group` elements (a chunk
// never straddles two groups: group % promo == 0). The partial restarts at 0 for each chunk
// (scale-d = 0 on the chunk's first instruction).

#include "wgmma_common.cuh"

__device__ __forceinline__ float epilogue(int mode, float acc, float p, float sa, float sb) {
  switch (mode) {
    case 0: return __fmaf_rn(__fmul_rn(sa, sb), p, acc);
    case 1: return __fmaf_rn(__fmul_rn(p, sa), sb, acc);
    case 2: return __fmaf_rn(__fmul_rn(p, sb), sa, acc);
    case 3: return __fmaf_rn(p, __fmul_rn(sa, sb), acc);
    default: return __fadd_rn(acc, __fmul_rn(__fmul_rn(p, sa), sb));
  }
}

#define GEMM(NAME, AT, BT)                                                                    \
extern "C" __global__ void __launch_bounds__(128) NAME(                                       \
    const u8* x, const u8* wt, const float* sa, const float* sb, float* y, int M, int N,      \
    int K, int group, int promo, int mode) {                                                  \
  __shared__ __align__(128) u8 as[2048];                                                      \
  __shared__ __align__(128) u8 bs[256];                                                       \
  int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;      \
  int m0 = blockIdx.y * 64, n0 = blockIdx.x * 8, nk = K / group;                              \
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f}, part[4] = {0.0f, 0.0f, 0.0f, 0.0f};                \
  for (int k0 = 0; k0 < K; k0 += 32) {                                                        \
    for (int idx = tid; idx < 64 * 32; idx += 128) {                                          \
      int r = idx >> 5, k = idx & 31;                                                         \
      as[tile_offset(r, k)] = (m0 + r < M) ? x[(size_t)(m0 + r) * K + k0 + k] : 0;           \
    }                                                                                         \
    for (int idx = tid; idx < 8 * 32; idx += 128) {                                           \
      int n = idx >> 5, k = idx & 31;                                                         \
      bs[tile_offset(n, k)] = (n0 + n < N) ? wt[(size_t)(n0 + n) * K + k0 + k] : 0;          \
    }                                                                                         \
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");                            \
    __syncthreads();                                                                          \
    u64 da = make_desc(as), db = make_desc(bs);                                               \
    int accumulate = (k0 % promo) != 0;                                                       \
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");                                 \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"                                  \
                 "wgmma.mma_async.sync.aligned.m64n8k32.f32." AT "." BT                       \
                 " {%0, %1, %2, %3}, %4, %5, p, 1, 1;\n}\n"                                   \
                 : "+f"(part[0]), "+f"(part[1]), "+f"(part[2]), "+f"(part[3])                 \
                 : "l"(da), "l"(db), "r"(accumulate));                                        \
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");                          \
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");                          \
    __syncthreads();                                                                          \
    if ((k0 + 32) % promo == 0 || k0 + 32 == K) {                                             \
      int gi = k0 / group;                                                                    \
      for (int v = 0; v < 4; ++v) {                                                           \
        int row = m0 + 16 * warp + g + 8 * (v >> 1), col = n0 + 2 * t + (v & 1);              \
        if (row < M && col < N)                                                               \
          acc[v] = epilogue(mode, acc[v], part[v], sa[(size_t)row * nk + gi],                 \
                            sb[(size_t)gi * N + col]);                                        \
      }                                                                                       \
    }                                                                                         \
  }                                                                                           \
  for (int v = 0; v < 4; ++v) {                                                               \
    int row = m0 + 16 * warp + g + 8 * (v >> 1), col = n0 + 2 * t + (v & 1);                  \
    if (row < M && col < N) y[(size_t)row * N + col] = acc[v];                                \
  }                                                                                           \
}

GEMM(gemm_f32_e4m3_e4m3, "e4m3", "e4m3")
GEMM(gemm_f32_e4m3_e5m2, "e4m3", "e5m2")
GEMM(gemm_f32_e5m2_e4m3, "e5m2", "e4m3")
GEMM(gemm_f32_e5m2_e5m2, "e5m2", "e5m2")
