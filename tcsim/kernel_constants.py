"""Numbers that the kernels, the parameter compiler and the exact oracle must agree on, stated
once.

Plain ints, no numpy and no numba: tcsim.params, tcsim.scales and tcsim.reference import them
without loading a kernel, and a numba kernel that imports one reads it as a compile-time
constant (numba freezes a module-level int wherever it is defined).
"""

from __future__ import annotations

# The exponent of "no term" (tcsim._kernels: a zero or non-finite input, a zero block scale,
# KernelParams.zero_exp when a zero operand takes no part in E). Exponents travel as int16: a
# product with a zero factor sums to <= NO_TERM + 254 and stays out of E (two of them, -32000,
# still fit in int16). With Datapath.zero_operand_exponent set, zeros carry that exponent instead
# and take part in E.
NO_TERM = -16000

# KernelParams.min_exp when the datapath has no lower limit on E (Datapath.min_exp_limit None):
# below every exponent a kernel meets, NO_TERM included, so max(E, NO_CLAMP) is E.
NO_CLAMP = -100000

# Stochastic term rounding draws its random integers from the same counter-based hash as the
# output rounding (sr_random over (seed, bi, i, j, counter)), at counters TERM_K + k (the product
# of K index k) and TERM_C + block (a C term inside the alignment): streams that never meet the
# output rounding's block counters (0, 1, ... < 2^32) or each other (k < 2^32).
TERM_K = 1 << 32
TERM_C = 1 << 33
