// The LearnedOptimizer's step for an LSTM rule, coordinate by coordinate (CPU, float32).
//
// For every coordinate n (independently, so any split over threads or passes gives the same bits):
//   x = features(g_n)                           log_sign: (log|g|/p, sign g) or (-1, e^p g); none: g
//   for each layer:  t = tanh([x, h, 1] W'^T)    one matmul-vector product and one tanh for all
//                    s = (1 + t) / 2             four gates: the i, f, o columns of W' hold half
//                    c' = s_f c + s_i t_g        the weights, so s = sigmoid of the gate and
//                    h' = s_o tanh(c')           t_g = tanh of the g gate
//                    x = h'
//   update_n = scale (w . h' + b)
// and the state rows (h, c of every layer) are overwritten in place. A coordinate whose
// gradient is not finite gets update 0 and keeps its state (the optimizer's "skip" policy).
//
// Why it is fast: the pytorch version streams (N, 4H) gate tensors through memory a dozen times
// per layer; here a coordinate's gates live in registers. The weights are packed (by
// kernels.pack_lstm) column-major, [x, h, 1] rows by 4 Hp columns (Hp = H rounded up to 4): the
// units in blocks of B (16 where the CPU has AVX-512, else 8), each block's columns the gates
// [i f g o] x B units, and a last block of the units left over as [i f g o] x R. A coordinate's
// gates are then 4 Hp / B vectors of B floats (5 of 16 for H = 20): the product is (rows)
// broadcasts times that many fused multiply-adds, done for a few coordinates at once so that each
// weight vector is loaded once for all of them and their accumulators are independent chains; the
// tanh and the cell update run on whole vectors, and only the up-to-3 units that round H up to 4
// are padding (zero weights; their c stays 0 and h 0, and they are never read back into a product
// or the readout). B = 8 and B = 16 give the same bits (tests/test_kernels.py).
//
// Built without -ffast-math on purpose: the non-finite test must not be optimized away.

#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef __AVX__
#include <immintrin.h>
#endif

namespace {

typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef float v16 __attribute__((vector_size(64), aligned(4)));

// The widest vector the build's CPU has: 16 floats with AVX-512, else 8 (the gate products and the
// cell update run on these, the readout on 8 lanes). Vector registers: 32 with AVX-512 (zmm, and ymm
// under AVX-512VL), else 16.
#ifdef __AVX512F__
constexpr int kWidestLanes = 16;
constexpr int kVectorRegisters = 32;
#else
constexpr int kWidestLanes = 8;
constexpr int kVectorRegisters = 16;
#endif

template <int L>
struct Lanes;
template <>
struct Lanes<8> {
  typedef v8 type;
};
template <>
struct Lanes<16> {
  typedef v16 type;
};

// x in every lane, as one broadcast (not "V{} + x": without -ffast-math that is a real addition of +0
// per use, one more operation in every row of the gate products).
template <typename V>
inline V splat(float x);
template <>
inline v8 splat<v8>(float x) { return v8{x, x, x, x, x, x, x, x}; }
template <>
inline v16 splat<v16>(float x) { return v16{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }

// Unaligned vector loads and stores, through memcpy: a vector type's alignment attribute does not survive
// being a template argument (V here is the naturally aligned type), so a pointer cast would claim an
// alignment that rows of the state buffers do not have.
template <typename V = v8>
inline V load(const float* p) {
  V r;
  std::memcpy(&r, p, sizeof(V));
  return r;
}

template <typename V>
inline void store(float* p, V x) { std::memcpy(p, &x, sizeof(V)); }

// bit copies between the vector-extension types (alignment 4, so that they load from anywhere) and the
// intrinsics' types (aligned to their size): a reference cast between them can make an aligned access to a
// spilled vector that is not aligned. These compile to nothing.
template <typename To, typename From>
inline To bits_as(const From& x) {
  static_assert(sizeof(To) == sizeof(From), "same size");
  To r;
  std::memcpy(&r, &x, sizeof(r));
  return r;
}

// 1 / d: the hardware reciprocal estimate and one Newton step; elsewhere a division. On AVX-512
// both widths take the 14-bit estimate (rcp14), so 8 and 16 lanes give the same bits; on AVX the
// 12-bit one (about 2 ulp after the step; a division costs several times more).
inline v8 reciprocal(v8 d) {
#if defined(__AVX512VL__)
  const v8 r = bits_as<v8>(_mm256_rcp14_ps(bits_as<__m256>(d)));
  return r * (2.0f - d * r);
#elif defined(__AVX__)
  const v8 r = bits_as<v8>(_mm256_rcp_ps(bits_as<__m256>(d)));
  return r * (2.0f - d * r);
#else
  return 1.0f / d;
#endif
}

inline v16 reciprocal(v16 d) {
#ifdef __AVX512F__
  const v16 r = bits_as<v16>(_mm512_rcp14_ps(bits_as<__m512>(d)));
  return r * (2.0f - d * r);
#else
  return 1.0f / d;
#endif
}

// x limited to [-k, k] (a NaN stays NaN-free as _mm*_max_ps/_mm*_min_ps make it)
inline v8 clamp(v8 x, float k) {
#ifdef __AVX__
  x = bits_as<v8>(_mm256_min_ps(_mm256_max_ps(bits_as<__m256>(x), _mm256_set1_ps(-k)), _mm256_set1_ps(k)));
#else
  x = x < -k ? splat<v8>(-k) : x;
  x = x > k ? splat<v8>(k) : x;
#endif
  return x;
}

inline v16 clamp(v16 x, float k) {
#ifdef __AVX512F__
  x = bits_as<v16>(_mm512_min_ps(_mm512_max_ps(bits_as<__m512>(x), _mm512_set1_ps(-k)), _mm512_set1_ps(k)));
#else
  x = x < -k ? splat<v16>(-k) : x;
  x = x > k ? splat<v16>(k) : x;
#endif
  return x;
}

// tanh lane by lane: x P(x^2) / Q(x^2), P and Q cubic (degrees (7, 6) in x), on [-7, 7], and
// +-tanh(7) = +-(1 - 1.7e-6) beyond; absolute error at most 1.2e-6 in float32, never above 1 in
// magnitude. The coefficients are a weighted least-squares fit of ours, reweighted towards the
// minimax error (benchmarks/results/step_cost_tanh/fit_tanh.py). Against the degree (13, 6) fit that
// Eigen uses (3e-7) it saves three of the fourteen operations of each tanh: 3-6% of the step
// (step_cost_tanh/ab.out); the rule's state keeps to 3 significant digits in bfloat16 without a
// measurable cost (benchmarks/results/state_precision*). No exp, no range reduction.
template <typename V>
inline V vtanh(V x) {
  x = clamp(x, 7.0f);
  const V x2 = x * x;
  V p = splat<V>(3.93072014048812e-06f);
  p = p * x2 + 2.2771405056118965e-03f;
  p = p * x2 + 0.12302353978157043f;
  p = p * x2 + 0.9999957084655762f;
  V q = splat<V>(1.4236722199711949e-04f);
  q = q * x2 + 2.1072890609502792e-02f;
  q = q * x2 + 0.45634204149246216f;
  q = q * x2 + 1.0f;
  return (p * x) * reciprocal(q);
}

inline bool finite(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return (bits & 0x7f800000u) != 0x7f800000u;
}

// State rows in memory <-> float rows in registers' reach. float: a copy; bfloat16: round to
// nearest even on the way out; float16: the F16C conversions where the CPU has them.
template <typename T>
struct Row;

template <>
struct Row<float> {
  static void load(const float* src, float* dst, int H) { std::memcpy(dst, src, H * sizeof(float)); }
  static void store(float* dst, const float* src, int H) { std::memcpy(dst, src, H * sizeof(float)); }
};

template <>
struct Row<c10::BFloat16> {
  static void load(const c10::BFloat16* src, float* dst, int H) {
    const uint16_t* in = reinterpret_cast<const uint16_t*>(src);
    uint32_t bits[32];
    for (int j = 0; j < H; ++j) bits[j] = static_cast<uint32_t>(in[j]) << 16;
    std::memcpy(dst, bits, H * sizeof(float));
  }
  static void store(c10::BFloat16* dst, const float* src, int H) {
    uint32_t bits[32];
    std::memcpy(bits, src, H * sizeof(float));
    uint16_t* out = reinterpret_cast<uint16_t*>(dst);
    // finite values only (the state of a finite rule): round half to even on the 16 dropped bits
    for (int j = 0; j < H; ++j) out[j] = static_cast<uint16_t>((bits[j] + 0x7fffu + ((bits[j] >> 16) & 1u)) >> 16);
  }
};

template <>
struct Row<c10::Half> {
  static void load(const c10::Half* src, float* dst, int H) {
    int j = 0;
#ifdef __F16C__
    for (; j + 8 <= H; j += 8)
      _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j))));
#endif
    for (; j < H; ++j) dst[j] = static_cast<float>(src[j]);
  }
  static void store(c10::Half* dst, const float* src, int H) {
    int j = 0;
#ifdef __F16C__
    for (; j + 8 <= H; j += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j),
                       _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
    for (; j < H; ++j) dst[j] = c10::Half(src[j]);
  }
};

// Gate Q (0..3 for i f g o) of a last block of R units, whose gates fill NT = 4R / B vectors as [i f g o] x R:
// its R values, which start at lane Q R of the concatenated vectors, in lanes 0..R-1 of one vector (one
// two-source shuffle; the lanes past R repeat lane 0's value, a finite gate). Going through memory instead
// (store the vectors, load at an offset) costs a failed store-to-load forwarding per gate: about a quarter of
// the step's time for H = 20.
template <typename VI, int B, int R, int Q, size_t... U>
constexpr VI gate_mask(std::index_sequence<U...>) {
  return VI{static_cast<int32_t>(U < static_cast<size_t>(R) ? Q * R % B + static_cast<int>(U) : Q * R % B)...};
}

template <typename V, int B, int R, int Q, int NT>
inline V gate_lanes(const V (&tail)[NT]) {
  typedef int32_t VI __attribute__((vector_size(sizeof(V))));
  constexpr int first = Q * R / B, second = first + 1 < NT ? first + 1 : first;
  return __builtin_shuffle(tail[first], tail[second], gate_mask<VI, B, R, Q>(std::make_index_sequence<B>{}));
}

// One LSTM layer for CO coordinates at once, in place on each one's h and c (H floats each; lanes
// past H stay 0). in[j]: coordinate j's nin inputs (must not alias its h); W: packed in blocks of
// B units (kernels.pack_lstm(block=B)): nin + H + 1 rows of 4 Hp = 8 NV floats, a block's columns
// [i f g o] x B, a last block of the R = Hp mod B units left as [i f g o] x R. The i, f, o columns
// hold half the weights: sigmoid(z) = (1 + tanh(z / 2)) / 2.
// The gate products run on vectors of B lanes (a row is 8 NV / B of them: 4 R is a multiple of B
// for B = 8 and 16), each weight vector loaded once for the CO coordinates, whose CO x (8 NV / B)
// accumulators are independent chains of fused multiply-adds; a full block's four gates are then
// four of these vectors, and its cell update runs on them in registers. Every gate of every
// coordinate sees the same operations in the same order whatever B and CO are.
template <int NV, int B, int CO>
inline void lstm_layer(const float* const* in, int nin, float* const* h, float* const* c, int H, const float* W) {
  typedef typename Lanes<B>::type V;
  constexpr int HP = 2 * NV;      // units, padded to a multiple of 4
  constexpr int NW = 8 * NV / B;  // vectors of B gates in a row
  constexpr int FB = HP / B;      // full blocks of B units
  constexpr int R = HP - B * FB;  // units in the last block
  static_assert((8 * NV) % B == 0 && (4 * R) % B == 0, "a packed row is a whole number of vectors");
  V acc[CO][NW];
  const float* bias = W + (nin + H) * 8 * NV;
#pragma GCC unroll 16
  for (int v = 0; v < NW; ++v) {
    const V b = load<V>(bias + B * v);
#pragma GCC unroll 4
    for (int j = 0; j < CO; ++j) acc[j][v] = b;
  }
  // rows [first, first + count) of W times src[j][0 .. count) into every coordinate's accumulators
  auto rows = [&](const float* const* src, int first, int count) __attribute__((always_inline)) {
    for (int k = 0; k < count; ++k) {
      V b[CO];
#pragma GCC unroll 4
      for (int j = 0; j < CO; ++j) b[j] = splat<V>(src[j][k]);
      const float* row = W + (first + k) * 8 * NV;
#pragma GCC unroll 16
      for (int v = 0; v < NW; ++v) {
        const V w = load<V>(row + B * v);
#pragma GCC unroll 4
        for (int j = 0; j < CO; ++j) acc[j][v] += b[j] * w;
      }
    }
  };
  rows(in, 0, nin);
  rows(h, nin, H);
#pragma GCC unroll 4
  for (int j = 0; j < CO; ++j) {
#pragma GCC unroll 2
    for (int b = 0; b < FB; ++b) {
      const V si = 0.5f + 0.5f * vtanh(acc[j][4 * b]), sf = 0.5f + 0.5f * vtanh(acc[j][4 * b + 1]);
      const V tg = vtanh(acc[j][4 * b + 2]), so = 0.5f + 0.5f * vtanh(acc[j][4 * b + 3]);
      const V cn = sf * load<V>(c[j] + B * b) + si * tg;
      store(c[j] + B * b, cn);
      store(h[j] + B * b, so * vtanh(cn));
    }
    if constexpr (R > 0) {  // the last R units: each gate's R lanes moved to lanes 0..R-1 in registers, R kept
      constexpr int NT = 4 * R / B;  // vectors of the last block's gates, [i f g o] x R
      V tail[NT];
#pragma GCC unroll 4
      for (int v = 0; v < NT; ++v) tail[v] = vtanh(acc[j][4 * FB + v]);
      const V si = 0.5f + 0.5f * gate_lanes<V, B, R, 0>(tail), sf = 0.5f + 0.5f * gate_lanes<V, B, R, 1>(tail);
      const V tg = gate_lanes<V, B, R, 2>(tail), so = 0.5f + 0.5f * gate_lanes<V, B, R, 3>(tail);
      const V cn = sf * load<V>(c[j] + B * FB) + si * tg;
      const V hn = so * vtanh(cn);
      std::memcpy(c[j] + B * FB, &cn, R * sizeof(float));
      std::memcpy(h[j] + B * FB, &hn, R * sizeof(float));
    }
  }
}

constexpr int kMaxLayers = 4;

// How many coordinates share a pass over the weights: as many as keep their accumulators, their
// broadcasts and a weight vector in registers (at most 4).
template <int NV, int B>
constexpr int coordinates_per_pass() {
  constexpr int per = 8 * NV / B + 1;  // accumulators and a broadcast per coordinate
  constexpr int fit = (kVectorRegisters - 2) / per;
#ifdef LEARNED_OPTIM_COORDINATES_PER_PASS  // a build-time override, for A/B timings (step_cost_avx512/ab.py)
  return LEARNED_OPTIM_COORDINATES_PER_PASS;
#endif
  return fit < 1 ? 1 : (fit > 4 ? 4 : fit);
}

template <int NV, int B, typename T>
void run(const float* grad, float sign, int64_t n, const std::vector<T*>& state, int H,
         const std::vector<const float*>& W, int nin0, int preprocess, float p, const float* w_out,
         float b_out, float out_scale, float* update, bool into_param, float lr) {
  constexpr int CO = coordinates_per_pass<NV, B>();
  const int layers = static_cast<int>(W.size());
  const float threshold = std::exp(-p), exp_p = std::exp(p);
  // state rows: where H is a multiple of 4 (H = Hp = 2 NV), of a size known here, so that the copies are a few
  // vector moves instead of calls
  const bool whole = H == 2 * NV;
  auto load_row = [&](const T* src, float* dst) {
    if (whole) Row<T>::load(src, dst, 2 * NV);
    else Row<T>::load(src, dst, H);
  };
  auto store_row = [&](T* dst, const float* src) {
    if (whole) Row<T>::store(dst, src, 2 * NV);
    else Row<T>::store(dst, src, H);
  };
  at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
    // per coordinate of a pass: H <= 32 lanes used, read as whole vectors of 8
    alignas(64) float h[CO][kMaxLayers][40] = {};
    alignas(64) float c[CO][kMaxLayers][40] = {};
    float x[CO][2] = {};
    int64_t rows[CO];
    // The layers of a pass's coordinates, then their state and output. A pass of m < CO coordinates
    // (the last of a range) runs its other slots on copies of the first one's inputs and drops them.
    auto pass = [&](int m) {
      for (int j = m; j < CO; ++j) {
        std::memcpy(x[j], x[0], sizeof(x[0]));
        std::memcpy(h[j], h[0], sizeof(h[0]));
        std::memcpy(c[j], c[0], sizeof(c[0]));
      }
      for (int l = 0; l < layers; ++l) {
        const float* in[CO];
        float* hp[CO];
        float* cp[CO];
        for (int j = 0; j < CO; ++j) {
          in[j] = l == 0 ? x[j] : h[j][l - 1];
          hp[j] = h[j][l];
          cp[j] = c[j][l];
        }
        lstm_layer<NV, B, CO>(in, l == 0 ? nin0 : H, hp, cp, H, W[l]);
      }
      for (int j = 0; j < m; ++j) {
        const int64_t r = rows[j];
        for (int l = 0; l < layers; ++l) {
          store_row(state[2 * l] + r * H, h[j][l]);
          store_row(state[2 * l + 1] + r * H, c[j][l]);
        }
        // readout on whole vectors (w_out and h are padded to a multiple of 8 with zeros), then the 8 lanes summed
        v8 acc = splat<v8>(0.0f);
#pragma GCC unroll 4
        for (int k = 0; k < H; k += 8) acc += load(w_out + k) * load(h[j][layers - 1] + k);
        float u = b_out;
        for (int k = 0; k < 8; ++k) u += acc[k];
        if (!into_param) {
          update[r] = out_scale * u;
        } else {  // the parameter itself: p + lr * update, as torch's add_(update, alpha=lr)
          const float step = out_scale * u;
          update[r] = update[r] + lr * step;
        }
      }
    };
    int m = 0;
    for (int64_t r = begin; r < end; ++r) {
      const float g = sign * grad[r];
      if (!finite(g)) {
        if (!into_param) update[r] = 0.0f;  // and a parameter keeps its value
        continue;
      }
      if (preprocess == 0) {  // log_sign
        const float a = std::fabs(g);
        if (a >= threshold) {
          x[m][0] = std::log(a) / p;
          x[m][1] = g > 0.0f ? 1.0f : -1.0f;
        } else {
          x[m][0] = -1.0f;
          x[m][1] = g * exp_p;
        }
      } else {
        x[m][0] = g;
      }
      for (int l = 0; l < layers; ++l) {
        load_row(state[2 * l] + r * H, h[m][l]);
        load_row(state[2 * l + 1] + r * H, c[m][l]);
      }
      rows[m] = r;
      if (++m == CO) {
        pass(CO);
        m = 0;
      }
    }
    if (m > 0) pass(m);
  });
}

template <int B, typename T>
void dispatch(int nv, const float* g, float sign, int64_t n, const std::vector<torch::Tensor>& states, int H,
              const std::vector<const float*>& w, int nin0, int pre, float p, const float* wo, float bo, float sc,
              float* u, bool into, float lr) {
  std::vector<T*> s;
  for (const auto& t : states) s.push_back(t.data_ptr<T>());
  switch (nv) {
#define LEARNED_OPTIM_CASE(NV)                                    \
  case NV:                                                        \
    run<NV, B, T>(g, sign, n, s, H, w, nin0, pre, p, wo, bo, sc, u, into, lr); \
    break;
    LEARNED_OPTIM_CASE(2)
    LEARNED_OPTIM_CASE(4)
    LEARNED_OPTIM_CASE(6)
    LEARNED_OPTIM_CASE(8)
    LEARNED_OPTIM_CASE(10)
    LEARNED_OPTIM_CASE(12)
    LEARNED_OPTIM_CASE(14)
    LEARNED_OPTIM_CASE(16)
#undef LEARNED_OPTIM_CASE
    default:
      TORCH_CHECK(false, "hidden sizes up to 32 are supported, got ", H);
  }
}

void check_f32(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(), what,
              ": a contiguous CPU float32 tensor is needed");
}

}  // namespace

// grad (N,); states [h0, c0, h1, c1, ...] each (N, H), all float32, all bfloat16 or all float16,
// updated in place; packed: one (nin_l + H + 1, 4 Hp) float32 tensor per layer (kernels.pack_lstm);
// readout_w: w_out padded with zeros to a multiple of 8; update (N,) receives the update, or with
// into_param is the (float32, flat) parameter itself and receives param + lr * update in place (a
// non-finite coordinate keeps its value): the step without an update buffer or a second pass.
// block: the units per block of packed's layout (kernels.pack_lstm(block=...)) and the lanes of the
// vectors the step runs on: vector_lanes(), or 8 on any build (the same bits; for the tests).
void lstm_rule_step(const torch::Tensor& grad, double sign, const std::vector<torch::Tensor>& states,
                    const std::vector<torch::Tensor>& packed, const std::string& preprocess, double p,
                    const torch::Tensor& readout_w, double readout_b, double output_scale, torch::Tensor& update,
                    bool into_param, double lr, int64_t block) {
  check_f32(grad, "grad");
  check_f32(update, "update");
  check_f32(readout_w, "readout_w");
  const int64_t n = grad.numel();
  TORCH_CHECK(update.numel() == n, "update: one value per coordinate");
  TORCH_CHECK(!packed.empty() && static_cast<int>(packed.size()) <= kMaxLayers, "1 to ", kMaxLayers, " layers");
  TORCH_CHECK(states.size() == 2 * packed.size(), "states: h and c of every layer");
  TORCH_CHECK(states[0].dim() == 2, "state: (N, H)");
  const int H = static_cast<int>(states[0].size(1));
  const int four_hp = static_cast<int>(packed[0].size(1));
  TORCH_CHECK(four_hp % 8 == 0 && four_hp / 4 >= H && four_hp / 4 - H < 4, "packed: 4 Hp columns, Hp = H rounded up to 4");
  TORCH_CHECK(readout_w.numel() == (H + 7) / 8 * 8, "readout_w: H values padded with zeros to a multiple of 8");
  const int nin0 = preprocess == "log_sign" ? 2 : (preprocess == "none" ? 1 : -1);
  TORCH_CHECK(nin0 > 0, "preprocess: log_sign or none");
  const auto dtype = states[0].scalar_type();
  TORCH_CHECK(dtype == torch::kFloat32 || dtype == torch::kBFloat16 || dtype == torch::kFloat16,
              "state: float32, bfloat16 or float16");
  for (const auto& t : states) {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == dtype && t.is_contiguous(), "state: contiguous CPU, one dtype");
    TORCH_CHECK(t.dim() == 2 && t.size(0) == n && t.size(1) == H, "state: (N, H)");
  }
  std::vector<const float*> w;
  for (size_t l = 0; l < packed.size(); ++l) {
    check_f32(packed[l], "packed");
    const int nin = l == 0 ? nin0 : H;
    TORCH_CHECK(packed[l].size(0) == nin + H + 1 && packed[l].size(1) == four_hp, "packed: (nin + H + 1, 4 Hp)");
    w.push_back(packed[l].data_ptr<float>());
  }
  const float* g = grad.data_ptr<float>();
  float* u = update.data_ptr<float>();
  const float* wo = readout_w.data_ptr<float>();
  const float sg = static_cast<float>(sign), pp = static_cast<float>(p), bo = static_cast<float>(readout_b),
              sc = static_cast<float>(output_scale), rate = static_cast<float>(lr);
  const int pre = nin0 == 2 ? 0 : 1, nv = four_hp / 8;
  TORCH_CHECK(block == 8 || block == kWidestLanes, "block: 8 or ", kWidestLanes, " units on this build, got ", block);
  auto with_block = [&](auto block_tag) {
    constexpr int B = decltype(block_tag)::value;
    if (dtype == torch::kFloat32) {
      dispatch<B, float>(nv, g, sg, n, states, H, w, nin0, pre, pp, wo, bo, sc, u, into_param, rate);
    } else if (dtype == torch::kBFloat16) {
      dispatch<B, c10::BFloat16>(nv, g, sg, n, states, H, w, nin0, pre, pp, wo, bo, sc, u, into_param, rate);
    } else {
      dispatch<B, c10::Half>(nv, g, sg, n, states, H, w, nin0, pre, pp, wo, bo, sc, u, into_param, rate);
    }
  };
  if constexpr (kWidestLanes == 16) {
    if (block == 16) {
      with_block(std::integral_constant<int, 16>{});
      return;
    }
  }
  with_block(std::integral_constant<int, 8>{});
}

// grad_norm="tensor"'s two reductions over a flat float32 gradient, without temporaries (see
// features.tensor_scale, which composes them): the largest finite |g| and the number of finite
// entries, then the sum of (g / amax)^2 over the finite entries, accumulated in double.
// Both run on 8 lanes at a time, branch-free: a finite |g|'s bit pattern orders as the value does, so the
// largest is an integer maximum (exact, in any order); the squares are summed in double in 8 independent lanes.
typedef uint32_t u8v __attribute__((vector_size(32), aligned(4)));
typedef int32_t i8v __attribute__((vector_size(32), aligned(4)));
typedef double d8v __attribute__((vector_size(64)));

std::tuple<double, int64_t> finite_amax_count(const torch::Tensor& grad) {
  check_f32(grad, "grad");
  const float* g = grad.data_ptr<float>();
  const int64_t n = grad.numel();
  return at::parallel_reduce(
      0, n, 1 << 16, std::make_tuple(0.0, int64_t{0}),
      [&](int64_t begin, int64_t end, std::tuple<double, int64_t> acc) {
        const u8v exponent = u8v{} + 0x7f800000u, magnitude = u8v{} + 0x7fffffffu;
        u8v top = u8v{};  // the largest finite |g|'s bits, per lane
        int64_t count = std::get<1>(acc);
        int64_t r = begin;
        while (r + 8 <= end) {
          // finite entries per lane, in 32 bits: added to the 64-bit count every 2^30 entries
          const int64_t stop = r + std::min<int64_t>((end - r) / 8 * 8, int64_t{1} << 30);
          u8v counted = u8v{};
          for (; r < stop; r += 8) {
            const u8v bits = load<u8v>(g + r);
            const u8v fin = (u8v)((bits & exponent) != exponent);  // all ones where finite
            const u8v a = bits & magnitude & fin;
            top = a > top ? a : top;
            counted -= fin;  // all ones is -1
          }
          for (int k = 0; k < 8; ++k) count += counted[k];
        }
        uint32_t best = 0;
        for (int k = 0; k < 8; ++k) best = std::max(best, top[k]);
        float amax = static_cast<float>(std::get<0>(acc));
        for (; r < end; ++r)
          if (finite(g[r])) {
            amax = std::max(amax, std::fabs(g[r]));
            ++count;
          }
        float top_value;
        std::memcpy(&top_value, &best, sizeof(top_value));
        return std::make_tuple(static_cast<double>(std::max(amax, top_value)), count);
      },
      [](std::tuple<double, int64_t> a, std::tuple<double, int64_t> b) {
        return std::make_tuple(std::max(std::get<0>(a), std::get<0>(b)), std::get<1>(a) + std::get<1>(b));
      });
}

double finite_scaled_square_sum(const torch::Tensor& grad, double amax) {
  check_f32(grad, "grad");
  const float* g = grad.data_ptr<float>();
  const double inv = amax > 0.0 ? 1.0 / amax : 1.0;
  return at::parallel_reduce(
      0, grad.numel(), 1 << 16, 0.0,
      [&](int64_t begin, int64_t end, double total) {
        const u8v exponent = u8v{} + 0x7f800000u;
        d8v part = d8v{};  // eight sums: independent additions, not one long chain
        int64_t r = begin;
        for (; r + 8 <= end; r += 8) {
          const u8v bits = load<u8v>(g + r);
          const i8v fin = (i8v)((bits & exponent) != exponent);
          const v8 x = (v8)((i8v)load(g + r) & fin);  // 0 where not finite
          const d8v v = __builtin_convertvector(x, d8v) * inv;
          part += v * v;
        }
        double rest = 0.0;
        for (; r < end; ++r) {
          const double v = finite(g[r]) ? g[r] * inv : 0.0;
          rest += v * v;
        }
        double sum = 0.0;
        for (int k = 0; k < 8; ++k) sum += part[k];
        return total + (sum + rest);
      },
      [](double a, double b) { return a + b; });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("finite_amax_count", &finite_amax_count, "The largest finite |g| and the count of finite entries (CPU float32)");
  m.def("finite_scaled_square_sum", &finite_scaled_square_sum, "Sum of (g / amax)^2 over the finite entries (CPU float32)");
  m.def("vector_lanes", []() { return kWidestLanes; }, "The widest float vector this build runs the gate products on (16 with AVX-512, else 8)");
  m.def("lstm_rule_step", &lstm_rule_step, "The LearnedOptimizer step of an LSTM rule, state updated in place (CPU; float32, bfloat16 or float16 state)");
}
