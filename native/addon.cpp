// addon.cpp — module init. Exports the TensorHandle class (an owned strided view of native memory),
// fromBuffer / asStrided / runOp, memory and capability queries. Everything here is synchronous; the JS
// side (lib/binding.ts) is the only caller. Native errors become JS errors with `code` = the error kind.
#include <atomic>
#include <napi.h>

#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

#include "cpu_features.h"
#include "cuda_loader.h"
#include "dispatch.h"
#include "kernels/gemm.h"
#include "peak.h"
#include "io/file_io.h"
#include "threadpool.h"

namespace ad {
namespace {

// Tags TensorHandle instances so a forged object can't be unwrapped as one.
const napi_type_tag kTensorTag = {0x8f3b1a2c4d5e6f70ULL, 0x1122334455667788ULL};
// Bytes of tensor storage reported to V8 as external memory, all environments (worker threads) together.
constexpr int64_t kReportCap = int64_t(256) << 20;
std::atomic<int64_t> g_reported{0};

[[noreturn]] void throw_js(Napi::Env env, const std::string& kind, const std::string& msg) {
  Napi::Error e = kind == "TypeError" ? Napi::TypeError::New(env, msg) : Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, kind));
  throw e;
}

class TensorHandle : public Napi::ObjectWrap<TensorHandle> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "TensorHandle",
                       {InstanceAccessor<&TensorHandle::Shape>("shape"),
                        InstanceAccessor<&TensorHandle::Strides>("strides"),
                        InstanceAccessor<&TensorHandle::Offset>("offset"),
                        InstanceAccessor<&TensorHandle::DTypeName>("dtype"),
                        InstanceAccessor<&TensorHandle::Device>("device"),
                        InstanceAccessor<&TensorHandle::NBytes>("nbytes"),
                        InstanceAccessor<&TensorHandle::StorageBytes>("storageBytes"),
                        InstanceAccessor<&TensorHandle::Disposed>("disposed"),
                        InstanceAccessor<&TensorHandle::Contig>("isContiguous"),
                        InstanceAccessor<&TensorHandle::Shared>("storageShared"),
                        InstanceAccessor<&TensorHandle::Version>("version"),
                        InstanceMethod<&TensorHandle::BumpVersion>("bumpVersion"),
                        InstanceMethod<&TensorHandle::ToBuffer>("toBuffer"),
                        InstanceMethod<&TensorHandle::Dispose>("dispose"),
                        InstanceMethod<&TensorHandle::SameStorage>("sameStorage")});
  }

  explicit TensorHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorHandle>(info) {}
  ~TensorHandle() override { release(); }

  static Napi::Object Wrap(Napi::Env env, Tensor t) {
    Napi::Object o = env.GetInstanceData<Napi::FunctionReference>()->New({});
    o.TypeTag(&kTensorTag);
    TensorHandle* h = Unwrap(o);
    h->env_ = env;
    // Report fresh storage to V8 so GC pressure reflects native memory (the finalizer is only a backstop), up to
    // kReportCap bytes reported at once: past V8's external-memory limit every further report starts a full GC,
    // and a training step holds gigabytes of activations (on a GPU that was one mark-compact per ~100 MB
    // allocated, about half the step's host time). Tensors are freed by dispose()/scopes, not by GC, so
    // the cap costs only how early GC notices a leak of very large tensors.
    if (t.st.use_count() == 1) {
      const int64_t room = kReportCap - g_reported.load();
      h->reported_ = std::max<int64_t>(0, std::min<int64_t>((int64_t)t.st->bytes, room));
      if (h->reported_) {
        g_reported += h->reported_;
        Napi::MemoryManagement::AdjustExternalMemory(env, h->reported_);
      }
    }
    h->t_ = std::move(t);
    h->alive_ = true;
    return o;
  }

  static TensorHandle* From(Napi::Env env, Napi::Value v, const char* what) {
    if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kTensorTag))
      throw_js(env, "TypeError", std::string(what) + ": expected a TensorHandle");
    TensorHandle* h = Unwrap(v.As<Napi::Object>());
    if (!h->alive_) throw_js(env, "DisposedError", std::string(what) + ": tensor was disposed");
    return h;
  }

  const Tensor& tensor() const { return t_; }

 private:
  void release() {
    if (!alive_) return;
    alive_ = false;
    t_ = Tensor();
    if (reported_) {
      // Finalizers may run during env teardown; adjusting then is harmless but skip if env is gone.
      if (env_) Napi::MemoryManagement::AdjustExternalMemory(env_, -reported_);
      g_reported -= reported_;
    }
    reported_ = 0;
  }
  Napi::Value Shape(const Napi::CallbackInfo& info) {
    check(info);
    auto a = Napi::Array::New(info.Env(), t_.shape.size());
    for (size_t k = 0; k < t_.shape.size(); k++) a.Set((uint32_t)k, Napi::Number::New(info.Env(), (double)t_.shape[k]));
    return a;
  }
  Napi::Value Strides(const Napi::CallbackInfo& info) {
    check(info);
    auto a = Napi::Array::New(info.Env(), t_.strides.size());
    for (size_t k = 0; k < t_.strides.size(); k++) a.Set((uint32_t)k, Napi::Number::New(info.Env(), (double)t_.strides[k]));
    return a;
  }
  Napi::Value Offset(const Napi::CallbackInfo& info) { check(info); return Napi::Number::New(info.Env(), (double)t_.offset); }
  Napi::Value DTypeName(const Napi::CallbackInfo& info) { check(info); return Napi::String::New(info.Env(), dtype_name(t_.dtype)); }
  Napi::Value Device(const Napi::CallbackInfo& info) { check(info); return Napi::String::New(info.Env(), t_.st->device.str()); }
  Napi::Value NBytes(const Napi::CallbackInfo& info) { check(info); return Napi::Number::New(info.Env(), (double)t_.nbytes()); }
  Napi::Value StorageBytes(const Napi::CallbackInfo& info) { check(info); return Napi::Number::New(info.Env(), (double)t_.st->bytes); }
  Napi::Value Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !alive_); }
  Napi::Value Contig(const Napi::CallbackInfo& info) { check(info); return Napi::Boolean::New(info.Env(), t_.is_contiguous()); }
  // another handle (a view, an alias) holds this storage too
  Napi::Value Shared(const Napi::CallbackInfo& info) { check(info); return Napi::Boolean::New(info.Env(), t_.st.use_count() > 1); }
  // the storage's in-place write count (shared by every view of it)
  Napi::Value Version(const Napi::CallbackInfo& info) { check(info); return Napi::Number::New(info.Env(), (double)t_.st->version); }
  Napi::Value BumpVersion(const Napi::CallbackInfo& info) { check(info); t_.st->version++; return info.Env().Undefined(); }
  Napi::Value SameStorage(const Napi::CallbackInfo& info) {
    check(info);
    TensorHandle* o = From(info.Env(), info[0], "sameStorage");
    return Napi::Boolean::New(info.Env(), o->t_.st == t_.st);
  }
  Napi::Value ToBuffer(const Napi::CallbackInfo& info) {
    check(info);
    Tensor c;
    try {
      c = t_.on_cpu() ? contiguous(t_) : to_device(t_, ::ad::Device{});  // device tensors: copied to the host first
    } catch (const Error& e) {
      throw_js(info.Env(), e.kind, std::string("toBuffer: ") + e.what());
    }
    size_t n = c.nbytes();
    auto ab = Napi::ArrayBuffer::New(info.Env(), n);
    if (n) std::memcpy(ab.Data(), c.raw(), n);
    return ab;
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    release();
    return info.Env().Undefined();
  }
  void check(const Napi::CallbackInfo& info) const {
    if (!alive_) throw_js(info.Env(), "DisposedError", "tensor was disposed");
  }

  Tensor t_;
  bool alive_ = false;
  int64_t reported_ = 0;
  napi_env env_ = nullptr;
};

std::vector<int64_t> read_int_array(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsArray()) throw_js(env, "TypeError", std::string(what) + " must be an array of integers");
  auto a = v.As<Napi::Array>();
  std::vector<int64_t> r(a.Length());
  for (uint32_t k = 0; k < a.Length(); k++) {
    Napi::Value e = a.Get(k);
    if (!e.IsNumber()) throw_js(env, "TypeError", std::string(what) + " must hold numbers");
    double d = e.As<Napi::Number>().DoubleValue();
    if (d != std::floor(d) || std::fabs(d) > 9.007199254740992e15)
      throw_js(env, "TypeError", std::string(what) + " must hold integers, got " + std::to_string(d));
    r[k] = (int64_t)d;
  }
  return r;
}

// fromBuffer(view: ArrayBufferView, dtype: string, shape: number[]) -> TensorHandle (copies the bytes)
Napi::Value FromBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsTypedArray() || !info[1].IsString())
    throw_js(env, "TypeError", "fromBuffer(typedArray, dtype, shape)");
  auto ta = info[0].As<Napi::TypedArray>();
  DType dt;
  std::string dn = info[1].As<Napi::String>();
  if (!dtype_from_name(dn, &dt)) throw_js(env, "DTypeError", "unknown dtype '" + dn + "'");
  auto shape = read_int_array(env, info[2], "shape");
  for (auto d : shape)
    if (d < 0) throw_js(env, "ShapeError", "negative dimension in shape " + shape_str(shape));
  int64_t n = shape_numel(shape);
  size_t need = (size_t)n * dtype_size(dt);
  if (ta.ByteLength() != need)
    throw_js(env, "ShapeError", "fromBuffer: " + std::to_string(ta.ByteLength()) + " bytes given, shape " +
                                    shape_str(shape) + " of " + dtype_name(dt) + " needs " + std::to_string(need));
  Tensor t = Tensor::empty(shape, dt);
  if (need) {
    auto ab = ta.ArrayBuffer();
    std::memcpy(t.raw(), static_cast<const char*>(ab.Data()) + ta.ByteOffset(), need);
  }
  return TensorHandle::Wrap(env, std::move(t));
}

// asStrided(h, shape, strides, offset) -> view sharing storage; every reachable element must lie inside it.
Napi::Value AsStrided(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorHandle* h = TensorHandle::From(env, info[0], "asStrided");
  auto shape = read_int_array(env, info[1], "shape");
  auto strides = read_int_array(env, info[2], "strides");
  if (!info[3].IsNumber()) throw_js(env, "TypeError", "asStrided: offset must be a number");
  int64_t off = info[3].As<Napi::Number>().Int64Value();
  const Tensor& t = h->tensor();
  if (shape.size() != strides.size())
    throw_js(env, "ShapeError", "asStrided: shape " + shape_str(shape) + " and strides " + shape_str(strides) + " differ in rank");
  int64_t cap = (int64_t)(t.st->requested / dtype_size(t.dtype));
  int64_t lo = off, hi = off;
  bool empty = false;
  for (size_t k = 0; k < shape.size(); k++) {
    if (shape[k] < 0) throw_js(env, "ShapeError", "asStrided: negative dimension in " + shape_str(shape));
    if (shape[k] == 0) empty = true;
    else if (strides[k] >= 0) hi += (shape[k] - 1) * strides[k];
    else lo += (shape[k] - 1) * strides[k];
  }
  if (!empty && (lo < 0 || hi >= cap))
    throw_js(env, "IndexError", "asStrided: view " + shape_str(shape) + " strides " + shape_str(strides) + " offset " +
                                    std::to_string(off) + " reaches outside the storage of " + std::to_string(cap) + " elements");
  return TensorHandle::Wrap(env, t.view(shape, strides, off));
}

AttrValue read_attr(Napi::Env env, Napi::Value v, const std::string& key) {
  AttrValue a;
  if (v.IsUndefined() || v.IsNull()) return a;
  if (v.IsNumber()) { a.kind = AttrValue::NUM; a.num = v.As<Napi::Number>().DoubleValue(); }
  else if (v.IsBoolean()) { a.kind = AttrValue::BOOL; a.b = v.As<Napi::Boolean>(); }
  else if (v.IsString()) { a.kind = AttrValue::STR; a.s = v.As<Napi::String>(); }
  else if (v.IsBigInt()) { bool lossless; a.kind = AttrValue::NUM; a.num = (double)v.As<Napi::BigInt>().Int64Value(&lossless); }
  else if (v.IsArray()) {
    a.kind = AttrValue::LIST;
    auto arr = v.As<Napi::Array>();
    for (uint32_t k = 0; k < arr.Length(); k++) {
      Napi::Value e = arr.Get(k);
      if (!e.IsNumber()) throw_js(env, "TypeError", "attribute '" + key + "' must be a list of numbers");
      a.list.push_back(e.As<Napi::Number>().DoubleValue());
    }
  } else throw_js(env, "TypeError", "attribute '" + key + "' has an unsupported type");
  return a;
}

// runOp(name, inputs: (TensorHandle|null)[], attrs: object) -> TensorHandle[]
Napi::Value RunOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsArray())
    throw_js(env, "TypeError", "runOp(name, inputs, attrs)");
  OpCtx ctx;
  ctx.name = info[0].As<Napi::String>();
  auto arr = info[1].As<Napi::Array>();
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value v = arr.Get(k);
    if (v.IsNull() || v.IsUndefined()) {
      ctx.in.emplace_back();
      ctx.present.push_back(false);
    } else {
      ctx.in.push_back(TensorHandle::From(env, v, ctx.name.c_str())->tensor());
      ctx.present.push_back(true);
    }
  }
  if (info.Length() > 2 && info[2].IsObject()) {
    auto o = info[2].As<Napi::Object>();
    auto keys = o.GetPropertyNames();
    for (uint32_t k = 0; k < keys.Length(); k++) {
      std::string key = keys.Get(k).As<Napi::String>();
      ctx.attrs[key] = read_attr(env, o.Get(key), key);
    }
  }
  try {
    run_op(ctx);
  } catch (const Error& e) {
    throw_js(env, e.kind, e.what());
  } catch (const std::bad_alloc&) {
    throw_js(env, "MemoryError", ctx.name + ": out of memory");
  } catch (const std::exception& e) {
    throw_js(env, "InternalError", ctx.name + ": " + e.what());
  }
  auto out = Napi::Array::New(env, ctx.out.size());
  for (size_t k = 0; k < ctx.out.size(); k++) out.Set((uint32_t)k, TensorHandle::Wrap(env, std::move(ctx.out[k])));
  return out;
}

// readRegion(path, byteOffset, dtype, shape) -> TensorHandle
Napi::Value ReadRegion(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsString() || !info[1].IsNumber() || !info[2].IsString())
    throw_js(env, "TypeError", "readRegion(path, byteOffset, dtype, shape)");
  DType dt;
  std::string dn = info[2].As<Napi::String>();
  if (!dtype_from_name(dn, &dt)) throw_js(env, "DTypeError", "unknown dtype '" + dn + "'");
  double off = info[1].As<Napi::Number>().DoubleValue();
  if (off < 0 || off != std::floor(off)) throw_js(env, "ValueError", "readRegion: bad offset");
  auto shape = read_int_array(env, info[3], "shape");
  try {
    return TensorHandle::Wrap(env, read_file_region(info[0].As<Napi::String>(), (int64_t)off, dt, shape));
  } catch (const Error& e) {
    throw_js(env, e.kind, e.what());
  }
}

Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  auto s = mem_stats();
  auto o = Napi::Object::New(info.Env());
  o.Set("liveStorages", (double)s.live_storages);
  o.Set("liveBytes", (double)s.live_bytes);
  o.Set("pooledBytes", (double)s.pooled_bytes);
  o.Set("peakBytes", (double)s.peak_bytes);
  o.Set("reportedToV8Bytes", (double)g_reported.load());  // tensor bytes V8 counts as external memory (capped)
  return o;
}
Napi::Value EmptyCache(const Napi::CallbackInfo& info) { mem_empty_cache(); return info.Env().Undefined(); }

// toDevice(handle, "cpu" | "cuda" | "cuda:N") -> TensorHandle (a contiguous copy there; the same tensor when it
// already is one)
Napi::Value ToDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[1].IsString()) throw_js(env, "TypeError", "toDevice(tensor, device)");
  const Tensor& t = TensorHandle::From(env, info[0], "to")->tensor();
  std::string ds = info[1].As<Napi::String>();
  Device dev;
  if (!parse_device(ds, &dev)) throw_js(env, "DeviceError", "unknown device '" + ds + "' (expected 'cpu', 'cuda' or 'cuda:N')");
  try {
    if (dev.type == DeviceType::CUDA && dev.index >= cuda_device_count())
      throw Error("DeviceError", "to(" + ds + "): " + (has_cuda() ? "only " + std::to_string(cuda_device_count()) + " CUDA device(s)"
                                                                  : "CUDA is not available (" + (cuda_load_error().empty() ? std::string("no CUDA device") : cuda_load_error()) + ")"));
    return TensorHandle::Wrap(env, to_device(t, dev));
  } catch (const Error& e) {
    throw_js(env, e.kind, e.what());
  }
}

// cudaInfo() -> {available, devices: [names], error}
Napi::Value CudaInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto o = Napi::Object::New(env);
  const int n = cuda_device_count();
  o.Set("available", n > 0);
  auto names = Napi::Array::New(env, n > 0 ? n : 0);
  for (int i = 0; i < n; i++) {
    char buf[256] = {0};
    if (cuda_api("cudaInfo").device_name(i, buf, sizeof buf) != 0) buf[0] = 0;
    names.Set((uint32_t)i, Napi::String::New(env, buf));
  }
  o.Set("devices", names);
  o.Set("error", cuda_load_error());
  return o;
}

// cudaMatmulPrecision(mode?: "highest" | "high") -> the f32 matmul precision after the call ("highest": FFMA, "high": 3xTF32)
Napi::Value CudaMatmulPrecision(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    const bool set = info.Length() > 0 && !info[0].IsUndefined();
    const char* name = set ? "cuda.setFloat32MatmulPrecision" : "cuda.getFloat32MatmulPrecision";
    std::string m;
    if (set) {  // the argument is checked before the device, so a bad mode is a ValueError everywhere
      m = info[0].IsString() ? std::string(info[0].As<Napi::String>()) : "";
      if (m != "highest" && m != "high")
        throw Error("ValueError", std::string(name) + ": expected 'highest' or 'high', got " +
                                      (info[0].IsString() ? "'" + m + "'" : std::string("a non-string value")));
    }
    const CudaApi& api = cuda_api(name);
    if (set) cuda_check(api.set_f32_matmul_precision(m == "high" ? 1 : 0), name);
    return Napi::String::New(env, api.get_f32_matmul_precision() == 1 ? "high" : "highest");
  } catch (const Error& e) {
    throw_js(env, e.kind, e.what());
  }
  return env.Undefined();
}

// cudaMemory("stats" | "empty" | "resetPeak" | "sync") -> stats object (all devices) / undefined
Napi::Value CudaMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string what = info.Length() > 0 && info[0].IsString() ? std::string(info[0].As<Napi::String>()) : "stats";
  try {
    const CudaApi& api = cuda_api("CUDA memory " + what);
    if (what == "empty") cuda_check(api.empty_cache(), "emptyCache('cuda')");
    else if (what == "resetPeak") cuda_check(api.reset_peak_stats(), "resetPeakMemory('cuda')");
    else if (what == "sync") cuda_check(api.synchronize(nullptr), "synchronize('cuda')");
    else if (what == "stats") {
      CudaMemStats s{};
      cuda_check(api.memory_stats(&s), "memoryStats('cuda')");
      auto o = Napi::Object::New(env);
      o.Set("liveBytes", (double)s.allocated_bytes);
      o.Set("peakBytes", (double)s.peak_allocated_bytes);
      o.Set("requestedBytes", (double)s.requested_bytes);
      o.Set("reservedBytes", (double)s.reserved_bytes);
      o.Set("peakReservedBytes", (double)s.peak_reserved_bytes);
      o.Set("pooledBytes", (double)s.cached_bytes);
      o.Set("numAllocs", (double)s.num_allocs);
      o.Set("numFrees", (double)s.num_frees);
      o.Set("numCacheHits", (double)s.num_cache_hits);
      o.Set("numDeviceMallocs", (double)s.num_device_mallocs);
      o.Set("numOomRetries", (double)s.num_oom_retries);
      return o;
    } else throw Error("ValueError", "cudaMemory: unknown request '" + what + "'");
  } catch (const Error& e) {
    throw_js(env, e.kind, e.what());
  }
  return env.Undefined();
}
Napi::Value ResetPeak(const Napi::CallbackInfo& info) { mem_reset_peak(); return info.Env().Undefined(); }
Napi::Value NumThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), num_threads()); }
Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  if (!info[0].IsNumber() || info[0].As<Napi::Number>().Int32Value() < 1)
    throw_js(info.Env(), "TypeError", "setNumThreads(n): n must be a positive integer");
  set_num_threads(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}
Napi::Value CpuFeaturesJs(const Napi::CallbackInfo& info) {
  auto f = cpu_features();
  auto o = Napi::Object::New(info.Env());
  o.Set("avx2", f.avx2); o.Set("fma", f.fma); o.Set("avx512f", f.avx512f); o.Set("avx512bf16", f.avx512bf16);
  o.Set("amxBf16", f.amx_bf16);
  o.Set("sgemm", sgemm_isa()); o.Set("bgemm", bgemm_isa());
  return o;
}
Napi::Value GemmForceIsa(const Napi::CallbackInfo& info) {
  std::string a = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "auto";
  std::string b = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "auto";
  gemm_force_isa(a.c_str(), b.c_str());
  return info.Env().Undefined();
}
Napi::Value SupportsOp(const Napi::CallbackInfo& info) {
  std::string n = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  std::string d = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "cpu";
  return Napi::Boolean::New(info.Env(), supports_op(n, d));
}
Napi::Value OpNames(const Napi::CallbackInfo& info) {
  auto names = op_names();
  auto a = Napi::Array::New(info.Env(), names.size());
  for (size_t k = 0; k < names.size(); k++) a.Set((uint32_t)k, names[k]);
  return a;
}
// The (threads?, iters?) arguments of the peak loops, defaulted and range-checked (a ValueError naming `name`).
std::pair<int, int64_t> peak_args(const Napi::CallbackInfo& info, const char* name, int64_t def_iters, int64_t max_iters) {
  int threads = info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : num_threads();
  int64_t iters = info[1].IsNumber() ? info[1].As<Napi::Number>().Int64Value() : def_iters;
  if (threads < 1 || threads > num_threads()) throw_js(info.Env(), "ValueError", std::string(name) + ": threads must be in [1, numThreads()]");
  if (iters < 1 || iters > max_iters) throw_js(info.Env(), "ValueError", std::string(name) + ": iters out of range");
  return {threads, iters};
}
Napi::Value FmaPeak(const Napi::CallbackInfo& info) {
  const auto [threads, iters] = peak_args(info, "fmaPeak", 20000000, (int64_t)1e10);
  auto r = fma_peak(threads, iters);
  auto o = Napi::Object::New(info.Env());
  o.Set("gflops", r.gflops);
  o.Set("isa", r.isa);
  return o;
}
Napi::Value Bf16DotPeak(const Napi::CallbackInfo& info) {
  const auto [threads, iters] = peak_args(info, "bf16DotPeak", 20000000, (int64_t)1e10);
  return Napi::Number::New(info.Env(), bf16_dot_peak(threads, iters));
}
Napi::Value AmxPeak(const Napi::CallbackInfo& info) {
  const auto [threads, iters] = peak_args(info, "amxPeak", 2000000, (int64_t)1e9);
  return Napi::Number::New(info.Env(), amx_peak(threads, iters));
}
// poolCheck(nchunks, lateUs): ChunkQueue's balancing, observable from a test. Each pool thread claims chunks of
// one parallel_run; every thread but the caller starts lateUs microseconds late. Returns how many times each
// chunk ran (all must be 1) and how many chunks the caller ran.
Napi::Value PoolCheck(const Napi::CallbackInfo& info) {
  const int64_t n = info[0].IsNumber() ? info[0].As<Napi::Number>().Int64Value() : 0;
  const int64_t late = info[1].IsNumber() ? info[1].As<Napi::Number>().Int64Value() : 0;
  if (n < 1 || n > 1000000) throw_js(info.Env(), "ValueError", "poolCheck: nchunks must be in [1, 1e6]");
  if (late < 0 || late > 1000000) throw_js(info.Env(), "ValueError", "poolCheck: lateUs must be in [0, 1e6]");
  std::vector<std::atomic<int>> runs((size_t)n);
  std::atomic<int64_t> by_caller{0};
  const int nt = num_threads();
  ChunkQueue q(n, nt);
  parallel_run(nt, [&](int tid, int) {
    if (tid != 0 && late > 0) std::this_thread::sleep_for(std::chrono::microseconds(late));
    q.run(tid, [&](int64_t c) {
      runs[(size_t)c].fetch_add(1);
      if (tid == 0) by_caller.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::microseconds(20));  // a chunk of real work
    });
  });
  auto counts = Napi::Array::New(info.Env(), (size_t)n);
  for (int64_t c = 0; c < n; c++) counts.Set((uint32_t)c, runs[(size_t)c].load());
  auto o = Napi::Object::New(info.Env());
  o.Set("runs", counts);
  o.Set("byCaller", (double)by_caller.load());
  return o;
}
Napi::Value HasCuda(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), has_cuda()); }

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // Per-environment constructor (worker_threads each get their own); freed with the env.
  Napi::Function cls = TensorHandle::Init(env);
  env.SetInstanceData<Napi::FunctionReference>(new Napi::FunctionReference(Napi::Persistent(cls)));
  exports.Set("TensorHandle", cls);
  exports.Set("fromBuffer", Napi::Function::New(env, FromBuffer));
  exports.Set("asStrided", Napi::Function::New(env, AsStrided));
  exports.Set("runOp", Napi::Function::New(env, RunOp));
  exports.Set("memoryStats", Napi::Function::New(env, MemoryStats));
  exports.Set("readRegion", Napi::Function::New(env, ReadRegion));
  exports.Set("emptyCache", Napi::Function::New(env, EmptyCache));
  exports.Set("resetPeakMemory", Napi::Function::New(env, ResetPeak));
  exports.Set("numThreads", Napi::Function::New(env, NumThreads));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("cpuFeatures", Napi::Function::New(env, CpuFeaturesJs));
  exports.Set("gemmForceIsa", Napi::Function::New(env, GemmForceIsa));
  exports.Set("supportsOp", Napi::Function::New(env, SupportsOp));
  exports.Set("opNames", Napi::Function::New(env, OpNames));
  exports.Set("hasCuda", Napi::Function::New(env, HasCuda));
  exports.Set("toDevice", Napi::Function::New(env, ToDevice));
  exports.Set("cudaInfo", Napi::Function::New(env, CudaInfo));
  exports.Set("cudaMemory", Napi::Function::New(env, CudaMemory));
  exports.Set("cudaMatmulPrecision", Napi::Function::New(env, CudaMatmulPrecision));
  exports.Set("fmaPeak", Napi::Function::New(env, FmaPeak));
  exports.Set("amxPeak", Napi::Function::New(env, AmxPeak));
  exports.Set("bf16DotPeak", Napi::Function::New(env, Bf16DotPeak));
  exports.Set("poolCheck", Napi::Function::New(env, PoolCheck));
  return exports;
}

}  // namespace
}  // namespace ad

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return ad::Init(env, exports); }
NODE_API_MODULE(adapters_node, InitAddon)
