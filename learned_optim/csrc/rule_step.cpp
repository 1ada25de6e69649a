// The LearnedOptimizer's step for an LSTM rule, one coordinate at a time (CPU, float32).
//
// For every coordinate n (independently, so any split over threads gives the same bits):
//   x = features(g_n)                           log_sign: (log|g|/p, sign g) or (-1, e^p g); none: g
//   for each layer:  s = sigmoid([x, h, 1] W'^T)    one matmul-vector product and one sigmoid for
//                    c' = s_f c + s_i (2 s_g - 1)    all four gates (the g rows of W' are doubled,
//                    h' = s_o (2 sigmoid(2 c') - 1)  so 2 sigmoid(2 a) - 1 = tanh(a))
//                    x = h'
//   update_n = scale (w . h' + b)
// and the state rows (h, c of every layer) are overwritten in place. A coordinate whose
// gradient is not finite gets update 0 and keeps its state (the optimizer's "skip" policy).
//
// Why it is fast: the pytorch version streams (N, 4H) gate tensors through memory a dozen times
// per layer; here one coordinate's gates live in registers. The weights are packed (by
// kernels.pack_lstm) column-major, [x, h, 1] rows by 4 Hp columns, each gate block padded from H to
// Hp = a multiple of 8 lanes with zero weights, so a coordinate's gates are NV = 4 Hp / 8 vectors
// of 8 floats: the product is (rows) broadcasts times NV fused multiply-adds, the sigmoids and
// the cell update run on whole vectors. The padded lanes hold harmless values (c stays 0, h 0)
// and are never read back into a product or the readout.
//
// Built without -ffast-math on purpose: exp below relies on exact float rounding, and the
// non-finite test must not be optimized away.

#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#ifdef __AVX__
#include <immintrin.h>
#endif

namespace {

typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef int32_t v8i __attribute__((vector_size(32), aligned(4)));

inline v8 splat(float x) { return v8{} + x; }

inline v8 load(const float* p) { return *reinterpret_cast<const v8*>(p); }

inline void store(float* p, v8 x) { *reinterpret_cast<v8*>(p) = x; }

// exp on 8 lanes: x = n ln2 + r with |r| <= ln2/2, exp(r) by a degree-6 polynomial (relative
// error ~2e-7), 2^n from the exponent bits. Inputs are clamped to [-87, 87], so no overflow.
inline v8 vexp(v8 x) {
#ifdef __AVX__
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(reinterpret_cast<__m256&>(x), _mm256_set1_ps(-87.0f)), _mm256_set1_ps(87.0f));
  std::memcpy(&x, &xc, sizeof(x));
#else
  x = x < -87.0f ? splat(-87.0f) : x;
  x = x > 87.0f ? splat(87.0f) : x;
#endif
  const v8 t = x * 1.44269504088896341f;
  const v8i n = __builtin_convertvector(t + 127.5f, v8i) - 127;  // round half up (t + 127.5 > 0)
  const v8 nf = __builtin_convertvector(n, v8);
  const v8 r = (x - nf * 0.693145751953125f) - nf * 1.428606765330187e-06f;  // ln2 in two parts
  v8 p = splat(1.0f / 720.0f);
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const v8i bits = (n + 127) << 23;
  v8 scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// 1 / d: on AVX, the 12-bit hardware reciprocal and one Newton step (about 2 ulp; a division
// costs several times more and the sigmoids are a third of the step); elsewhere a division.
inline v8 reciprocal(v8 d) {
#ifdef __AVX__
  v8 r;
  const __m256 approx = _mm256_rcp_ps(reinterpret_cast<__m256&>(d));
  std::memcpy(&r, &approx, sizeof(r));
  return r * (2.0f - d * r);
#else
  return 1.0f / d;
#endif
}

inline v8 vsigmoid(v8 z) { return reciprocal(1.0f + vexp(-z)); }

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

// One LSTM layer for one coordinate, in place on its h and c (Hp floats each; lanes past H
// stay 0). in: the layer's nin inputs (must not alias h); W: packed (nin + H + 1 rows of NV*8).
template <int NV>
inline void lstm_layer(const float* in, int nin, float* h, float* c, int H, const float* W) {
  constexpr int Hp = 2 * NV;  // 4 Hp = 8 NV
  v8 acc[NV];
  const float* bias = W + (nin + H) * 8 * NV;
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) acc[v] = load(bias + 8 * v);
  for (int k = 0; k < nin; ++k) {
    const v8 b = splat(in[k]);
    const float* row = W + k * 8 * NV;
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] += b * load(row + 8 * v);
  }
  for (int k = 0; k < H; ++k) {
    const v8 b = splat(h[k]);
    const float* row = W + (nin + k) * 8 * NV;
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] += b * load(row + 8 * v);
  }
  alignas(32) float s[8 * NV];
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) store(s + 8 * v, vsigmoid(acc[v]));
#pragma GCC unroll 4
  for (int j = 0; j < Hp; j += 8) {
    const v8 si = load(s + j), sf = load(s + Hp + j), sg = load(s + 2 * Hp + j), so = load(s + 3 * Hp + j);
    const v8 cn = sf * load(c + j) + si * (2.0f * sg - 1.0f);
    store(c + j, cn);
    store(h + j, so * (2.0f * vsigmoid(2.0f * cn) - 1.0f));
  }
}

constexpr int kMaxLayers = 4;

template <int NV, typename T>
void run(const float* grad, float sign, int64_t n, const std::vector<T*>& state, int H,
         const std::vector<const float*>& W, int nin0, int preprocess, float p, const float* w_out,
         float b_out, float out_scale, float* update) {
  constexpr int Hp = 2 * NV;
  const int layers = static_cast<int>(W.size());
  const float threshold = std::exp(-p), exp_p = std::exp(p);
  at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
    alignas(32) float h[kMaxLayers][Hp] = {};
    alignas(32) float c[kMaxLayers][Hp] = {};
    for (int64_t r = begin; r < end; ++r) {
      const float g = sign * grad[r];
      if (!finite(g)) {
        update[r] = 0.0f;
        continue;
      }
      float x[2];
      if (preprocess == 0) {  // log_sign
        const float m = std::fabs(g);
        if (m >= threshold) {
          x[0] = std::log(m) / p;
          x[1] = g > 0.0f ? 1.0f : -1.0f;
        } else {
          x[0] = -1.0f;
          x[1] = g * exp_p;
        }
      } else {
        x[0] = g;
      }
      for (int l = 0; l < layers; ++l) {
        Row<T>::load(state[2 * l] + r * H, h[l], H);
        Row<T>::load(state[2 * l + 1] + r * H, c[l], H);
      }
      for (int l = 0; l < layers; ++l) lstm_layer<NV>(l == 0 ? x : h[l - 1], l == 0 ? nin0 : H, h[l], c[l], H, W[l]);
      for (int l = 0; l < layers; ++l) {
        Row<T>::store(state[2 * l] + r * H, h[l], H);
        Row<T>::store(state[2 * l + 1] + r * H, c[l], H);
      }
      // readout on whole vectors (w_out is padded to Hp with zeros), then the 8 lanes summed
      v8 acc = splat(0.0f);
#pragma GCC unroll 4
      for (int j = 0; j < Hp; j += 8) acc += load(w_out + j) * load(h[layers - 1] + j);
      float u = b_out;
      for (int j = 0; j < 8; ++j) u += acc[j];
      update[r] = out_scale * u;
    }
  });
}

template <typename T>
void dispatch(int nv, const float* g, float sign, int64_t n, const std::vector<torch::Tensor>& states, int H,
              const std::vector<const float*>& w, int nin0, int pre, float p, const float* wo, float bo, float sc,
              float* u) {
  std::vector<T*> s;
  for (const auto& t : states) s.push_back(t.data_ptr<T>());
  switch (nv) {
#define LEARNED_OPTIM_CASE(NV)                                    \
  case NV:                                                        \
    run<NV, T>(g, sign, n, s, H, w, nin0, pre, p, wo, bo, sc, u); \
    break;
    LEARNED_OPTIM_CASE(4)
    LEARNED_OPTIM_CASE(8)
    LEARNED_OPTIM_CASE(12)
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
// readout_w (Hp,): w_out padded with zeros; update (N,) receives the update.
void lstm_rule_step(const torch::Tensor& grad, double sign, const std::vector<torch::Tensor>& states,
                    const std::vector<torch::Tensor>& packed, const std::string& preprocess, double p,
                    const torch::Tensor& readout_w, double readout_b, double output_scale, torch::Tensor& update) {
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
  TORCH_CHECK(four_hp % 8 == 0 && four_hp / 4 >= H && four_hp / 4 - H < 8, "packed: 4 Hp columns, Hp = H rounded up to 8");
  TORCH_CHECK(readout_w.numel() == four_hp / 4, "readout_w: Hp values");
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
              sc = static_cast<float>(output_scale);
  const int pre = nin0 == 2 ? 0 : 1, nv = four_hp / 8;
  if (dtype == torch::kFloat32) {
    dispatch<float>(nv, g, sg, n, states, H, w, nin0, pre, pp, wo, bo, sc, u);
  } else if (dtype == torch::kBFloat16) {
    dispatch<c10::BFloat16>(nv, g, sg, n, states, H, w, nin0, pre, pp, wo, bo, sc, u);
  } else {
    dispatch<c10::Half>(nv, g, sg, n, states, H, w, nin0, pre, pp, wo, bo, sc, u);
  }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lstm_rule_step", &lstm_rule_step, "The LearnedOptimizer step of an LSTM rule, state updated in place (CPU; float32, bfloat16 or float16 state)");
}
