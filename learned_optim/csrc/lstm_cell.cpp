// Pointwise parts of one LSTM cell step, fused into one pass over the rows (CPU, float32).
//
// The matmul that produces the gate pre-activations z = [x, h, 1] W'^T stays in BLAS
// (learned_optim/kernels.py); these kernels do everything element-wise around it, which
// in eager PyTorch costs a dozen passes over memory. W' has the g rows doubled, so that
//   s = sigmoid(z)            (all four gates, order i, f, g, o)
//   g = 2 s_g - 1             (= tanh of the undoubled pre-activation)
//   c' = s_f c + s_i g,  t = tanh(c') = 2 sigmoid(2 c') - 1,  h' = s_o t
// exactly as learned_optim.nets.lstm_cell_fast computes it.

#include <torch/extension.h>

#include <cmath>
#include <vector>

namespace {

// exp(-z) overflows float32 for z < -88.7, and under -ffast-math the vectorized exp then
// gives NaN, not inf: clamp first. sigmoid(±88) is already 1 or ~6e-39 in float32.
inline float sigmoid(float z) {
  z = z < -88.0f ? -88.0f : (z > 88.0f ? 88.0f : z);
  return 1.0f / (1.0f + std::exp(-z));
}

}  // namespace

// z: (N, 4H) pre-activations, c: (N, H). Returns h', c', s (saved for backward), t (saved).
std::vector<torch::Tensor> lstm_pointwise_forward(const torch::Tensor& z, const torch::Tensor& c) {
  TORCH_CHECK(z.device().is_cpu() && z.scalar_type() == torch::kFloat32 && z.is_contiguous(), "z: contiguous CPU float32");
  TORCH_CHECK(c.device().is_cpu() && c.scalar_type() == torch::kFloat32 && c.is_contiguous(), "c: contiguous CPU float32");
  const int64_t n = z.size(0), H = c.size(1);
  TORCH_CHECK(z.size(1) == 4 * H && c.size(0) == n, "shapes: z (N, 4H), c (N, H)");
  auto s = torch::empty_like(z);
  auto c_new = torch::empty_like(c);
  auto h_new = torch::empty_like(c);
  auto t = torch::empty_like(c);
  const float* zp = z.data_ptr<float>();
  const float* cp = c.data_ptr<float>();
  float* sp = s.data_ptr<float>();
  float* cnp = c_new.data_ptr<float>();
  float* hp = h_new.data_ptr<float>();
  float* tp = t.data_ptr<float>();
  // rows are independent: any split over threads gives the same bits
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* zr = zp + r * 4 * H;
      float* sr = sp + r * 4 * H;
#pragma omp simd
      for (int64_t k = 0; k < 4 * H; ++k) sr[k] = sigmoid(zr[k]);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const int64_t q = r * H + j;
        const float g = 2.0f * sr[2 * H + j] - 1.0f;
        const float cn = sr[H + j] * cp[q] + sr[j] * g;
        const float tn = 2.0f * sigmoid(2.0f * cn) - 1.0f;
        cnp[q] = cn;
        tp[q] = tn;
        hp[q] = sr[3 * H + j] * tn;
      }
    }
  });
  return {h_new, c_new, s, t};
}

// Gradients: from dh', dc' (N, H) and the saved s, c, t to dz (N, 4H) and dc (N, H).
std::vector<torch::Tensor> lstm_pointwise_backward(const torch::Tensor& dh, const torch::Tensor& dc_next,
                                                   const torch::Tensor& s, const torch::Tensor& c,
                                                   const torch::Tensor& t) {
  for (const auto* x : {&dh, &dc_next, &s, &c, &t}) {
    TORCH_CHECK(x->device().is_cpu() && x->scalar_type() == torch::kFloat32 && x->is_contiguous(),
                "backward inputs: contiguous CPU float32");
  }
  const int64_t n = s.size(0), H = c.size(1);
  auto dz = torch::empty_like(s);
  auto dc_prev = torch::empty_like(c);
  const float* dhp = dh.data_ptr<float>();
  const float* dcp = dc_next.data_ptr<float>();
  const float* sp = s.data_ptr<float>();
  const float* cp = c.data_ptr<float>();
  const float* tp = t.data_ptr<float>();
  float* dzp = dz.data_ptr<float>();
  float* dcpp = dc_prev.data_ptr<float>();
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* sr = sp + r * 4 * H;
      float* dzr = dzp + r * 4 * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const int64_t q = r * H + j;
        const float si = sr[j], sf = sr[H + j], sg = sr[2 * H + j], so = sr[3 * H + j];
        const float tn = tp[q], d_h = dhp[q];
        const float dc = dcp[q] + d_h * so * (1.0f - tn * tn);  // through h' = s_o tanh(c')
        dzr[j] = dc * (2.0f * sg - 1.0f) * si * (1.0f - si);      // input gate
        dzr[H + j] = dc * cp[q] * sf * (1.0f - sf);               // forget gate
        dzr[2 * H + j] = dc * si * 2.0f * sg * (1.0f - sg);       // g = 2 s_g - 1
        dzr[3 * H + j] = d_h * tn * so * (1.0f - so);             // output gate
        dcpp[q] = dc * sf;
      }
    }
  });
  return {dz, dc_prev};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lstm_pointwise_forward", &lstm_pointwise_forward, "LSTM cell element-wise forward (CPU, float32)");
  m.def("lstm_pointwise_backward", &lstm_pointwise_backward, "LSTM cell element-wise backward (CPU, float32)");
}
