// pybind11 bindings: argument conversion, size checks, GIL release and exceptions only. Python
// (fastlstm/_model.py) gives the friendly errors; these checks exist so that calling the extension
// directly with inconsistent arrays raises instead of reading or writing out of bounds.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu_features.h"
#include "linear.h"
#include "lstm.h"
#include "thread_pool.h"

namespace py = pybind11;

namespace fastlstm {
namespace {

// An expected array shape of up to three dimensions; a value type, so the per-call checks of the
// streaming path allocate nothing.
struct Shape {
  int64_t dims[3] = {0, 0, 0};
  int ndim = 0;
  Shape(std::initializer_list<int64_t> values) {
    for (int64_t v : values) dims[ndim++] = v;
  }
  bool matches(const py::array& a) const {
    if (a.ndim() != ndim) return false;
    for (int i = 0; i < ndim; ++i)
      if (a.shape(i) != dims[i]) return false;
    return true;
  }
};

std::string shape_string(const int64_t* dims, py::ssize_t ndim) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (ndim == 1 ? ",)" : ")");
}

std::string shape_string(const py::array& a) {
  std::vector<int64_t> dims(a.shape(), a.shape() + a.ndim());
  return shape_string(dims.data(), a.ndim());
}

// A new C-contiguous array of T, straight from numpy's C API: pybind11's array constructors build
// two std::vectors per array, a visible share of a small call's fixed cost.
template <typename T>
py::array new_array(const Shape& shape) {
  const auto& api = py::detail::npy_api::get();
  Py_intptr_t dims[3];
  for (int i = 0; i < shape.ndim; ++i) dims[i] = shape.dims[i];
  PyObject* descr = api.PyArray_DescrFromType_(py::detail::npy_format_descriptor<T>::value);
  if (descr == nullptr) throw py::error_already_set();
  // Steals descr; null strides and data: numpy allocates a C-contiguous array.
  PyObject* array = api.PyArray_NewFromDescr_(api.PyArray_Type_, descr, shape.ndim, dims, nullptr, nullptr, 0, nullptr);
  if (array == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::array>(array);
}

// Arguments arrive as Python objects so a wrong type gets a TypeError naming it, not a cast error.
py::array as_array(const py::object& value, const char* name) {
  if (!py::isinstance<py::array>(value))
    throw py::type_error(std::string(name) + " must be a numpy array, got " +
                         std::string(py::str(py::type::of(value).attr("__name__"))));
  return py::reinterpret_borrow<py::array>(value);
}

template <typename T>
void require_dtype(const py::array& a, const char* name) {
  static const int expected = py::dtype::of<T>().num();
  const auto* descr = py::detail::array_descriptor_proxy(py::detail::array_proxy(a.ptr())->descr);
  // A byte-swapped array has the same type number; its values would be read as garbage.
  static const char swapped = [] {
    const uint16_t probe = 1;
    return *reinterpret_cast<const char*>(&probe) == 1 ? '>' : '<';
  }();
  if (descr->type_num != expected || descr->byteorder == swapped)
    throw py::type_error(std::string(name) + " must have dtype " + std::string(py::str(py::dtype::of<T>())) +
                         ", got " + std::string(py::str(a.dtype())));
}

// The kernels load T values directly: an address that is not a multiple of alignof(T) would be
// undefined behaviour (and a fault on some CPUs).
template <typename T>
void require_aligned(const py::array& a, const char* name) {
  if (reinterpret_cast<std::uintptr_t>(a.data()) % alignof(T) != 0)
    throw std::invalid_argument(std::string(name) + " must be aligned to its dtype (copy it with numpy.array)");
}

// The bytes an array's elements occupy, [begin, end); empty for an empty array.
struct Span {
  const char* begin = nullptr;
  const char* end = nullptr;
  bool overlaps(const Span& other) const { return begin < other.end && other.begin < end; }
};

Span span_of(const py::handle& handle) {
  if (!handle) return {};
  const auto a = py::reinterpret_borrow<py::array>(handle);
  if (a.size() == 0) return {};
  const char* lo = static_cast<const char*>(a.data());
  const char* hi = lo;
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    const py::ssize_t extent = (a.shape(i) - 1) * a.strides(i);
    (extent < 0 ? lo : hi) += extent;
  }
  return {lo, hi + a.itemsize()};
}

// The stride of an axis in elements, when the kernels can use it: the last axis must be contiguous,
// the others whole elements apart. A size-1 axis is never stepped along, so its stride (numpy gives
// new axes stride 0) does not matter.
template <typename T>
int64_t element_stride(const py::array& x, py::ssize_t axis, bool last) {
  if (x.shape(axis) <= 1) return 0;
  const py::ssize_t stride = x.strides(axis);
  if (last ? stride != static_cast<py::ssize_t>(sizeof(T)) : stride % static_cast<py::ssize_t>(sizeof(T)) != 0)
    throw std::invalid_argument("input's last dimension must be contiguous, with strides a multiple of its itemsize");
  return stride / static_cast<py::ssize_t>(sizeof(T));
}

// A C-contiguous, aligned array of dtype T and exactly this shape.
template <typename T>
void require_array(const py::array& a, const char* name, const Shape& shape) {
  require_dtype<T>(a, name);
  require_aligned<T>(a, name);
  if (!shape.matches(a))
    throw std::invalid_argument(std::string(name) + " must have shape " + shape_string(shape.dims, shape.ndim) +
                                ", got " + shape_string(a));
  if (!(a.flags() & py::array::c_style)) throw std::invalid_argument(std::string(name) + " must be C-contiguous");
}

// An integer argument given from Python: an int or anything with __index__ (numpy's integers),
// not a bool, saturated to Py_ssize_t. Taken as an object so that a float or None gets
// "<requirement>, got float" rather than pybind11's list of overloads.
Py_ssize_t integer_argument(const py::handle& value, const std::string& requirement) {
  if (PyBool_Check(value.ptr()) || !PyIndex_Check(value.ptr()))
    throw py::type_error(requirement + ", got " + std::string(py::str(py::type::of(value).attr("__name__"))));
  const Py_ssize_t n = PyNumber_AsSsize_t(value.ptr(), nullptr);  // saturates instead of overflowing
  if (n == -1 && PyErr_Occurred()) throw py::error_already_set();
  return n;
}

// A thread count in [minimum, ThreadPool::kMaxThreads].
int thread_count(const py::handle& value, const char* name, int minimum) {
  const Py_ssize_t n = integer_argument(value, std::string(name) + " must be an int");
  const bool saturated = n == PY_SSIZE_T_MAX || n == PY_SSIZE_T_MIN;  // printing a huge int could itself fail
  if (n < minimum || n > ThreadPool::kMaxThreads)
    throw std::invalid_argument(std::string(name) + " must lie in [" + std::to_string(minimum) + ", " +
                                std::to_string(ThreadPool::kMaxThreads) + "]" +
                                (minimum == 0 ? " (0: the default from set_num_threads)" : "") + ", got " +
                                (saturated ? std::string("an integer beyond 64 bits") : std::to_string(n)));
  return static_cast<int>(n);
}

LstmDims make_dims(int64_t input_size, int64_t hidden_size, int64_t num_layers, bool bias, bool bidirectional,
                   int64_t proj_size) {
  // Far above any real LSTM, low enough that every size product below fits in int64 with room.
  constexpr int64_t kMaxDim = int64_t(1) << 24;
  if (input_size <= 0 || hidden_size <= 0 || num_layers <= 0 || proj_size < 0)
    throw std::invalid_argument("LSTM sizes must be positive (proj_size >= 0)");
  if (input_size > kMaxDim || hidden_size > kMaxDim || num_layers > 1024 || proj_size > kMaxDim)
    throw std::invalid_argument("LSTM sizes are too large");
  if (proj_size >= hidden_size) throw std::invalid_argument("proj_size must be smaller than hidden_size");
  LstmDims dims;
  dims.input_size = input_size;
  dims.hidden_size = hidden_size;
  dims.num_layers = num_layers;
  dims.bias = bias;
  dims.bidirectional = bidirectional;
  dims.proj_size = proj_size;
  return dims;
}

// The last axis of an input (3-D sequence or a step's 1-D/2-D) must be the model's input_size.
void require_input_size(const py::array& x, const LstmDims& dims) {
  const py::ssize_t given = x.shape(x.ndim() - 1);
  if (given != dims.input_size)
    throw std::invalid_argument("input.size(-1) must be " + std::to_string(dims.input_size) + ", got " +
                                std::to_string(given));
}

// The numpy dtype a stored weight type arrives as: numpy has no bfloat16, so its bits come as uint16.
template <typename W>
using NumpyWeight = std::conditional_t<std::is_same_v<W, Bf16>, uint16_t, W>;

// A weight matrix of `rows` x `k` in the stored type, and for int8 the float32 scales array that
// follows it in `arrays`: (rows, scale_groups(k)). `next` is the index of the matrix; it moves past
// what was taken.
template <typename T, typename W>
MatrixSource<T, W> take_matrix(const std::vector<py::array>& arrays, std::size_t& next, int64_t rows, int64_t k) {
  auto take = [&]() -> const py::array& {
    if (next >= arrays.size())
      throw std::invalid_argument("expected more weight arrays than the " + std::to_string(arrays.size()) + " given");
    return arrays[next++];
  };
  MatrixSource<T, W> source;
  const py::array& values = take();
  require_array<NumpyWeight<W>>(values, "weight", {rows, k});
  source.values = reinterpret_cast<const W*>(values.data());
  if constexpr (WeightFormat<W>::kScaled) {
    const py::array& scales = take();
    require_array<T>(scales, "weight scales", {rows, scale_groups(k)});
    source.scales = static_cast<const T*>(scales.data());
  }
  return source;
}

template <typename T, typename W = T>
class PyPackedLstm {
 public:
  PyPackedLstm(int64_t input_size, int64_t hidden_size, int64_t num_layers, bool bias, bool bidirectional,
               int64_t proj_size, const std::vector<py::array>& weights)
      : lstm_(build(make_dims(input_size, hidden_size, num_layers, bias, bidirectional, proj_size), weights)) {}

  py::object forward(const py::array& x, bool batch_first, const py::object& h0, const py::object& c0,
                    const py::object& lengths, const py::object& out, const py::object& h_n,
                    const py::object& c_n, const py::object& num_threads) const {
    // First: its __index__ is Python code, which must not run between the checks and the compute.
    const int threads = thread_count(num_threads, "num_threads", 0);
    const LstmDims& dims = lstm_.dims();
    require_dtype<T>(x, "input");
    if (x.ndim() != 3) throw std::invalid_argument("input must be 3-D, got " + std::to_string(x.ndim()) + "-D");
    require_input_size(x, dims);
    const int64_t steps = batch_first ? x.shape(1) : x.shape(0);
    const int64_t batch = batch_first ? x.shape(0) : x.shape(1);
    if (steps == 0) throw std::invalid_argument("sequence length must be at least 1");
    // An empty batch reads nothing, and numpy gives empty arrays arbitrary strides.
    if (batch > 0) {
      element_stride<T>(x, 2, true);
      require_aligned<T>(x, "input");
    }

    ForwardRequest<T> req;
    req.x = static_cast<const T*>(x.data());
    req.seq_len = steps;
    req.batch = batch;
    if (batch > 0) {
      req.x_stride_t = element_stride<T>(x, batch_first ? 1 : 0, false);
      req.x_stride_b = element_stride<T>(x, batch_first ? 0 : 1, false);
    }

    const int64_t layers = dims.num_layers * dims.num_directions();
    const Shape h_shape{layers, batch, dims.output_size()}, c_shape{layers, batch, dims.hidden_size};
    Arrays arrays;
    bind_initial_state(req, arrays, h0, c0, h_shape, c_shape);
    if (!lengths.is_none()) {
      py::array array = as_array(lengths, "lengths");
      require_array<int64_t>(array, "lengths", {batch});
      // A private copy, validated: the caller's array stays writable by its other threads while
      // the GIL is released, and the kernels index with these values.
      const auto* given = static_cast<const int64_t*>(array.data());
      arrays.length_copy.assign(given, given + batch);
      for (int64_t b = 0; b < batch; ++b)
        if (arrays.length_copy[b] < 1 || arrays.length_copy[b] > steps)
          throw std::invalid_argument("lengths must lie in [1, " + std::to_string(steps) + "], got " +
                                      std::to_string(arrays.length_copy[b]) + " at index " + std::to_string(b));
      req.lengths = arrays.length_copy.data();
      arrays.lengths = std::move(array);
    }

    const int64_t width = dims.num_directions() * dims.output_size();
    const Shape out_shape = batch_first ? Shape{batch, steps, width} : Shape{steps, batch, width};
    bind_outputs(req, arrays, out, h_n, c_n, out_shape, h_shape, c_shape);
    req.out_stride_t = batch_first ? width : batch * width;
    req.out_stride_b = batch_first ? steps * width : width;
    return run(x, req, arrays, out, h_n, c_n, threads);
  }

  // One time step of (batch, input_size) or unbatched (input_size,) input, with states shaped as
  // nn.LSTM's hx (2-D when unbatched) and optional caller-owned outputs: the streaming fast path.
  py::object step(const py::array& x, const py::object& h0, const py::object& c0, const py::object& out,
                 const py::object& h_n, const py::object& c_n, const py::object& num_threads) const {
    const int threads = thread_count(num_threads, "num_threads", 0);  // first, as in forward
    const LstmDims& dims = lstm_.dims();
    require_dtype<T>(x, "input");
    if (x.ndim() != 1 && x.ndim() != 2)
      throw std::invalid_argument("step input must be (batch, input_size) or (input_size,), got " +
                                  shape_string(x));
    const bool unbatched = x.ndim() == 1;
    require_input_size(x, dims);
    const int64_t batch = unbatched ? 1 : x.shape(0);
    if (batch > 0) {
      element_stride<T>(x, x.ndim() - 1, true);
      require_aligned<T>(x, "input");
    }
    ForwardRequest<T> req;
    req.x = static_cast<const T*>(x.data());
    req.seq_len = 1;
    req.batch = batch;
    req.x_stride_b = unbatched || batch == 0 ? 0 : element_stride<T>(x, 0, false);

    const int64_t layers = dims.num_layers * dims.num_directions();
    const int64_t width = dims.num_directions() * dims.output_size();
    auto shape = [&](int64_t size) { return unbatched ? Shape{layers, size} : Shape{layers, batch, size}; };
    const Shape h_shape = shape(dims.output_size()), c_shape = shape(dims.hidden_size);
    const Shape out_shape = unbatched ? Shape{width} : Shape{batch, width};
    Arrays arrays;
    bind_initial_state(req, arrays, h0, c0, h_shape, c_shape);
    bind_outputs(req, arrays, out, h_n, c_n, out_shape, h_shape, c_shape);
    req.out_stride_b = width;
    return run(x, req, arrays, out, h_n, c_n, threads);
  }

 private:
  // Arrays a call keeps alive while the kernels use their memory.
  struct Arrays {
    py::object h0, c0, lengths, out, h_n, c_n;  // null until bound (no empty-array allocations)
    std::vector<int64_t> length_copy;           // what the kernels read of `lengths`
  };

  // Outputs written while inputs are still being read would corrupt the result. The one aliasing
  // allowed is h_n onto h0 and c_n onto c0 exactly (a stream's state updated in place): a layer's
  // initial state is read before its final state is written, and layers use disjoint rows.
  static void check_no_overlap(const py::array& x, const Arrays& arrays) {
    const Span input = span_of(x), h0 = span_of(arrays.h0), c0 = span_of(arrays.c0), lengths = span_of(arrays.lengths);
    const Span out = span_of(arrays.out), h_n = span_of(arrays.h_n), c_n = span_of(arrays.c_n);
    const struct {
      const char* name;
      Span span;
      const Span* same_as;  // the one input it may alias exactly
    } outputs[] = {{"out", out, nullptr}, {"h_n", h_n, &h0}, {"c_n", c_n, &c0}};
    for (const auto& o : outputs) {
      const struct {
        const char* name;
        Span span;
      } inputs[] = {{"the input", input}, {"h0", h0}, {"c0", c0}, {"lengths", lengths}};
      for (const auto& in : inputs) {
        const bool exact_alias = o.same_as != nullptr && o.same_as->begin == in.span.begin &&
                                 o.same_as->end == in.span.end && in.span.begin == o.span.begin &&
                                 in.span.end == o.span.end;
        if (o.span.overlaps(in.span) && !exact_alias)
          throw std::invalid_argument(std::string(o.name) + " must not overlap " + in.name);
      }
    }
    if (out.overlaps(h_n) || out.overlaps(c_n) || h_n.overlaps(c_n))
      throw std::invalid_argument("out, h_n and c_n must not overlap each other");
  }

  static void bind_initial_state(ForwardRequest<T>& req, Arrays& arrays, const py::object& h0, const py::object& c0,
                                 const Shape& h_shape, const Shape& c_shape) {
    if (!h0.is_none()) {
      py::array array = as_array(h0, "h0");
      require_array<T>(array, "h0", h_shape);
      req.h0 = static_cast<const T*>(array.data());
      arrays.h0 = std::move(array);
    }
    if (!c0.is_none()) {
      py::array array = as_array(c0, "c0");
      require_array<T>(array, "c0", c_shape);
      req.c0 = static_cast<const T*>(array.data());
      arrays.c0 = std::move(array);
    }
  }

  static void bind_outputs(ForwardRequest<T>& req, Arrays& arrays, const py::object& out, const py::object& h_n,
                           const py::object& c_n, const Shape& out_shape, const Shape& h_shape,
                           const Shape& c_shape) {
    py::array out_array = output_array(out, "out", out_shape);
    py::array h_n_array = output_array(h_n, "h_n", h_shape);
    py::array c_n_array = output_array(c_n, "c_n", c_shape);
    req.out = static_cast<T*>(out_array.mutable_data());
    req.h_n = static_cast<T*>(h_n_array.mutable_data());
    req.c_n = static_cast<T*>(c_n_array.mutable_data());
    arrays.out = std::move(out_array);
    arrays.h_n = std::move(h_n_array);
    arrays.c_n = std::move(c_n_array);
  }

  // Checks what the caller gave (out, h_n, c_n as given, None for fresh arrays), then computes.
  // Returns (output, h_n, c_n); None when the caller gave all three (the streaming path needs no tuple).
  py::object run(const py::array& x, const ForwardRequest<T>& req, const Arrays& arrays, const py::object& out,
                 const py::object& h_n, const py::object& c_n, int threads) const {
    // Fresh outputs are new memory and cannot overlap anything; caller-given ones are checked.
    if (!out.is_none() || !h_n.is_none() || !c_n.is_none()) check_no_overlap(x, arrays);
    {
      py::gil_scoped_release release;
      lstm_.forward(req, threads);
    }
    if (!out.is_none() && !h_n.is_none() && !c_n.is_none()) return py::none();
    return py::make_tuple(arrays.out, arrays.h_n, arrays.c_n);
  }

  // The caller's buffer when given (checked, so the kernels can write it blindly), else a new array.
  static py::array output_array(const py::object& given, const char* name, const Shape& shape) {
    if (given.is_none()) return new_array<T>(shape);
    py::array array = as_array(given, name);
    require_array<T>(array, name, shape);
    if (!array.writeable()) throw std::invalid_argument(std::string(name) + " must be writeable");
    return array;
  }

  // The arrays in nn.LSTM's order (weight_ih, weight_hh, [bias_ih, bias_hh], [weight_hr] per layer
  // and direction), each weight matrix followed by its scales for int8; every one checked.
  static std::vector<DirectionSource<T, W>> weight_sources(const LstmDims& dims, const std::vector<py::array>& weights) {
    std::vector<DirectionSource<T, W>> sources;
    const int64_t H = dims.hidden_size;
    std::size_t next = 0;
    auto take_bias = [&]() {
      if (next >= weights.size())
        throw std::invalid_argument("expected more weight arrays than the " + std::to_string(weights.size()) + " given");
      const py::array& a = weights[next++];
      require_array<T>(a, "bias", {4 * H});
      return static_cast<const T*>(a.data());
    };
    for (int64_t layer = 0; layer < dims.num_layers; ++layer) {
      for (int64_t d = 0; d < dims.num_directions(); ++d) {
        DirectionSource<T, W> source;
        source.w_ih = take_matrix<T, W>(weights, next, 4 * H, dims.layer_input_size(layer));
        source.w_hh = take_matrix<T, W>(weights, next, 4 * H, dims.output_size());
        if (dims.bias) {
          source.b_ih = take_bias();
          source.b_hh = take_bias();
        }
        if (dims.proj_size > 0) source.w_hr = take_matrix<T, W>(weights, next, dims.proj_size, H);
        sources.push_back(source);
      }
    }
    if (next != weights.size())
      throw std::invalid_argument("expected " + std::to_string(next) + " weight arrays, got " + std::to_string(weights.size()));
    return sources;
  }

  // Validates every weight array before PackedLstm reads it.
  static PackedLstm<T, W> build(const LstmDims& dims, const std::vector<py::array>& weights) {
    return PackedLstm<T, W>(dims, weight_sources(dims, weights));
  }

  PackedLstm<T, W> lstm_;
};

template <typename T, typename W = T>
void bind_packed_lstm(py::module_& m, const char* name) {
  using Py = PyPackedLstm<T, W>;
  py::class_<Py>(m, name, "An LSTM's weights packed for the kernels of this CPU; immutable.")
      .def(py::init<int64_t, int64_t, int64_t, bool, bool, int64_t, const std::vector<py::array>&>(),
           py::arg("input_size"), py::arg("hidden_size"), py::arg("num_layers"), py::arg("bias"),
           py::arg("bidirectional"), py::arg("proj_size"), py::arg("weights"))
      .def("forward", &Py::forward, py::arg("input"), py::arg("batch_first"), py::arg("h0"),
           py::arg("c0"), py::arg("lengths"), py::arg("out") = py::none(), py::arg("h_n") = py::none(),
           py::arg("c_n") = py::none(), py::arg("num_threads") = py::int_(0),
           "Full forward over layers, directions and time with the GIL released. Returns (output, h_n, c_n), "
           "written into out/h_n/c_n when given (None when all three are given).")
      .def("step", &Py::step, py::arg("input"), py::arg("h0"), py::arg("c0"), py::arg("out") = py::none(),
           py::arg("h_n") = py::none(), py::arg("c_n") = py::none(), py::arg("num_threads") = py::int_(0),
           "One time step of (batch, input_size) or (input_size,) input. Returns (output, h_n, c_n), or None "
           "when out, h_n and c_n are all given.");
}

// nn.Linear for converted models' heads: (rows, in_features) in, a new (rows, out_features) out.
template <typename T, typename W = T>
class PyPackedLinear {
 public:
  PyPackedLinear(const py::object& weight, const py::object& bias, const py::object& scales)
      : linear_(build(weight, bias, scales)) {}

  py::array forward(const py::object& input) const {
    const py::array x = as_array(input, "input");
    require_dtype<T>(x, "input");
    require_aligned<T>(x, "input");
    if (x.ndim() != 2) throw std::invalid_argument("input must be 2-D (rows, in_features), got " + shape_string(x));
    if (x.shape(1) != linear_.in_features())
      throw std::invalid_argument("input must have " + std::to_string(linear_.in_features()) + " features, got " +
                                  shape_string(x));
    const int64_t rows = x.shape(0);
    py::array out = new_array<T>({rows, linear_.out_features()});
    if (rows == 0) return out;
    const int64_t x_stride = element_stride<T>(x, 0, false);
    element_stride<T>(x, 1, true);
    const T* x_data = static_cast<const T*>(x.data());
    T* out_data = static_cast<T*>(out.mutable_data());
    {
      py::gil_scoped_release release;
      linear_.forward(x_data, rows, x_stride, out_data, linear_.out_features());
    }
    return out;
  }

  int64_t in_features() const { return linear_.in_features(); }
  int64_t out_features() const { return linear_.out_features(); }

 private:
  static PackedLinear<T, W> build(const py::object& weight_object, const py::object& bias_object,
                                  const py::object& scales_object) {
    constexpr int64_t kMaxDim = int64_t(1) << 24;  // every size product below fits in int64 with room
    const py::array weight = as_array(weight_object, "weight");
    require_dtype<NumpyWeight<W>>(weight, "weight");
    if (weight.ndim() != 2 || weight.shape(0) <= 0 || weight.shape(1) <= 0 || weight.shape(0) > kMaxDim ||
        weight.shape(1) > kMaxDim)
      throw std::invalid_argument("weight must be 2-D (out_features, in_features) with sizes in [1, 2**24], got " +
                                  shape_string(weight));
    require_array<NumpyWeight<W>>(weight, "weight", {weight.shape(0), weight.shape(1)});
    const T* scales = nullptr;
    if constexpr (WeightFormat<W>::kScaled) {
      if (scales_object.is_none()) throw std::invalid_argument("int8 weights need their scales");
      const py::array s = as_array(scales_object, "scales");
      require_array<T>(s, "scales", {weight.shape(0), scale_groups(weight.shape(1))});
      scales = static_cast<const T*>(s.data());
    } else if (!scales_object.is_none()) {
      throw std::invalid_argument("only int8 weights take scales");
    }
    const T* bias = nullptr;
    if (!bias_object.is_none()) {
      const py::array b = as_array(bias_object, "bias");
      require_array<T>(b, "bias", {weight.shape(0)});
      bias = static_cast<const T*>(b.data());
    }
    return PackedLinear<T, W>(reinterpret_cast<const W*>(weight.data()), scales, bias, weight.shape(0), weight.shape(1));
  }

  PackedLinear<T, W> linear_;
};

template <typename T, typename W = T>
void bind_packed_linear(py::module_& m, const char* name) {
  using Py = PyPackedLinear<T, W>;
  py::class_<Py>(m, name, "An nn.Linear's weights packed for the kernels of this CPU; immutable.")
      .def(py::init<const py::object&, const py::object&, const py::object&>(), py::arg("weight"), py::arg("bias"),
           py::arg("scales") = py::none())
      .def("forward", &Py::forward, py::arg("input"),
           "input (rows, in_features) -> a new (rows, out_features) array: input @ weight.T + bias, GIL released.")
      .def_property_readonly("in_features", &Py::in_features)
      .def_property_readonly("out_features", &Py::out_features);
}

}  // namespace
}  // namespace fastlstm

PYBIND11_MODULE(_core, m) {
  using namespace fastlstm;
  m.doc() = "fastlstm's C++ core: packed LSTM weights and the forward pass.";
  bind_packed_lstm<float>(m, "PackedLstmF32");
  bind_packed_lstm<double>(m, "PackedLstmF64");
  bind_packed_linear<float>(m, "PackedLinearF32");
  bind_packed_linear<double>(m, "PackedLinearF64");
  // Reduced-precision weights (fastlstm/_quantize.py makes them): bf16 as uint16 bits; int8 with
  // float32 scales per row and group of INT8_GROUP inputs.
  bind_packed_lstm<float, Bf16>(m, "PackedLstmBf16");
  bind_packed_lstm<float, int8_t>(m, "PackedLstmI8");
  bind_packed_linear<float, Bf16>(m, "PackedLinearBf16");
  bind_packed_linear<float, int8_t>(m, "PackedLinearI8");
  m.attr("INT8_GROUP") = kInt8Group;
  m.def("get_num_threads", [] { return ThreadPool::instance().num_threads(); },
        "Threads one forward call may use by default, the caller's included.");
  m.def("set_num_threads", [](const py::object& n) {
    ThreadPool::instance().set_num_threads(thread_count(n, "num_threads", 1));
  }, py::arg("n"), "Set the default number of threads per forward call.");
  m.attr("MAX_THREADS") = ThreadPool::kMaxThreads;
  m.def("get_workspace_limit", &workspace_limit, "Scratch bytes a thread keeps between calls, per dtype.");
  m.def("set_workspace_limit", [](const py::object& bytes) {
    const Py_ssize_t n = integer_argument(bytes, "workspace limit must be an int (bytes)");
    if (n < 0) throw std::invalid_argument("workspace limit must be >= 0 bytes, got " + std::to_string(n));
    set_workspace_limit(n);
  }, py::arg("bytes"), "Set the scratch bytes a thread keeps between calls, per dtype.");
  m.def("supported_isas", [] {
    std::vector<std::string> names;
    for (Isa isa : supported_isas()) names.push_back(isa_name(isa));
    return names;
  }, "Instruction sets this CPU supports, ascending.");
  m.def("active_isa", [] { return std::string(isa_name(active_isa())); }, "The kernel set selected.");
  m.def("kernel_isas", [] { return py::make_tuple(active_kernels<float>().isa, active_kernels<double>().isa); },
        "The ISA each active kernel table (float32, float64) was built for, as the tables themselves say.");
  m.def("_set_dot_instructions", &set_dot_enabled, py::arg("enabled"),
        "Tests only: whether int8 weights may use the AVX-512 VNNI kernels where the CPU has VNNI.");
  m.def("quantized_kernel_isas",
        [] { return py::make_tuple(active_kernels<float, Bf16>().isa, active_kernels<float, int8_t>().isa); },
        "The ISA each active reduced-precision table (bf16, int8 weights) was built for.");
  m.def("set_active_isa", &set_active_isa, py::arg("name"), "Use the kernels for this instruction set.");
}
