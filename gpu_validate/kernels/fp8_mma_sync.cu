// FP8 dot-product probes through mma.sync.m16n8k32 (native on sm_89 Ada: QMMA in SASS; on
// sm_90 Hopper the compiler emulates it with FP16 HMMA plus an FP32 add of C,
// docs/gpu.md#which-instruction).
//
// One warp computes 8 independent dot products d[i] = sum_k a[i][k] * b[i][k] + c[i] for rows
// i0..i0+7 (A rows 0..7 = a[i0..i0+7], B column n = b[i0+n], results on the diagonal D[r][r];
// A rows 8..15 are zero). K runs as a chain of k32 instructions, each result the next C.
// Fragments (lane = tid % 32, g = lane >> 2, t = lane & 3; byte j of a register = k 4t + j):
//  a0 = A[g][4t..], a1 = A[g+8][4t..], a2 = A[g][16+4t..], a3 = A[g+8][16+4t..];
//  b0 = B[4t..4t+3][n = g], b1 = B[16+4t..][n = g];
//  f32: c0, c1 = C[g][2t], C[g][2t+1]; c2, c3 = rows g + 8. f16: c0 = {C[g][2t], C[g][2t+1]}.

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

__device__ __forceinline__ u32 pack4(const u8* p) {
  return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

#define MMA_SYNC_F32(NAME, AT, BT)                                                            \
extern "C" __global__ void NAME(const u8* a, const u8* b, const float* c, float* d, int rows, \
                                int K) {                                                      \
  int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;                                  \
  int i0 = (blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * 8;                         \
  bool live = i0 + g < rows;                                                                  \
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};                                                    \
  if (live && g == 2 * t) acc[0] = c[i0 + g];                                                 \
  if (live && g == 2 * t + 1) acc[1] = c[i0 + g];                                             \
  for (int k0 = 0; k0 < K; k0 += 32) {                                                        \
    u32 a0 = 0, a2 = 0, b0 = 0, b1 = 0, zero = 0;                                             \
    if (live) {                                                                               \
      const u8* ar = a + (size_t)(i0 + g) * K + k0;                                           \
      const u8* br = b + (size_t)(i0 + g) * K + k0;                                           \
      a0 = pack4(ar + 4 * t); a2 = pack4(ar + 16 + 4 * t);                                    \
      b0 = pack4(br + 4 * t); b1 = pack4(br + 16 + 4 * t);                                    \
    }                                                                                         \
    asm volatile("mma.sync.aligned.m16n8k32.row.col.f32." AT "." BT ".f32 "                   \
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"          \
                 : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])                     \
                 : "r"(a0), "r"(zero), "r"(a2), "r"(zero), "r"(b0), "r"(b1));                 \
  }                                                                                           \
  if (live && g == 2 * t) d[i0 + g] = acc[0];                                                 \
  if (live && g == 2 * t + 1) d[i0 + g] = acc[1];                                             \
}

#define MMA_SYNC_F16(NAME, AT, BT)                                                            \
extern "C" __global__ void NAME(const u8* a, const u8* b, const u16* c, u16* d, int rows,     \
                                int K) {                                                      \
  int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;                                  \
  int i0 = (blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * 8;                         \
  bool live = i0 + g < rows;                                                                  \
  u32 lo = (live && g == 2 * t) ? c[i0 + g] : 0, hi = (live && g == 2 * t + 1) ? c[i0 + g] : 0; \
  u32 acc[2] = {lo | (hi << 16), 0};                                                          \
  for (int k0 = 0; k0 < K; k0 += 32) {                                                        \
    u32 a0 = 0, a2 = 0, b0 = 0, b1 = 0, zero = 0;                                             \
    if (live) {                                                                               \
      const u8* ar = a + (size_t)(i0 + g) * K + k0;                                           \
      const u8* br = b + (size_t)(i0 + g) * K + k0;                                           \
      a0 = pack4(ar + 4 * t); a2 = pack4(ar + 16 + 4 * t);                                    \
      b0 = pack4(br + 4 * t); b1 = pack4(br + 16 + 4 * t);                                    \
    }                                                                                         \
    asm volatile("mma.sync.aligned.m16n8k32.row.col.f16." AT "." BT ".f16 "                   \
                 "{%0, %1}, {%2, %3, %4, %5}, {%6, %7}, {%0, %1};\n"                          \
                 : "+r"(acc[0]), "+r"(acc[1])                                                 \
                 : "r"(a0), "r"(zero), "r"(a2), "r"(zero), "r"(b0), "r"(b1));                 \
  }                                                                                           \
  if (live && g == 2 * t) d[i0 + g] = (u16)(acc[0] & 0xFFFF);                                 \
  if (live && g == 2 * t + 1) d[i0 + g] = (u16)(acc[0] >> 16);                                \
}

#define ALL_FORMS(AT, BT)                                 \
  MMA_SYNC_F32(mma_sync_f32_##AT##_##BT, #AT, #BT)        \
  MMA_SYNC_F16(mma_sync_f16_##AT##_##BT, #AT, #BT)

ALL_FORMS(e4m3, e4m3)
ALL_FORMS(e4m3, e5m2)
ALL_FORMS(e5m2, e4m3)
ALL_FORMS(e5m2, e5m2)
