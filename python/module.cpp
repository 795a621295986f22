// The Python module ffkernels._C. Loading it runs the static TORCH_LIBRARY registrations
// of csrc/ (which define torch.ops.ffkernels.*); the module itself only reports how it
// was built. Plain CPython API on purpose: no pybind11 / torch/extension.h (which would
// add most of a minute to every build of this file).
#include <Python.h>

#include <ATen/Parallel.h>

#include "../csrc/cpu/aggregate_schedule.h"
#include "../csrc/cpu/cpu_isa.h"

#ifndef FFKERNELS_VERSION
#define FFKERNELS_VERSION "unknown"
#endif
#ifndef FFKERNELS_TORCH_VERSION
#define FFKERNELS_TORCH_VERSION "unknown"
#endif

namespace {

bool compiled_with_cuda() {
#ifdef FFKERNELS_WITH_CUDA
  return true;
#else
  return false;
#endif
}

PyObject* has_cuda(PyObject*, PyObject*) { return PyBool_FromLong(compiled_with_cuda() ? 1 : 0); }

PyObject* num_threads(PyObject*, PyObject*) { return PyLong_FromLong(at::get_num_threads()); }

PyObject* set_num_threads(PyObject*, PyObject* arg) {
  const long n = PyLong_AsLong(arg);
  if (n == -1 && PyErr_Occurred()) return nullptr;
  if (n < 1) {
    PyErr_SetString(PyExc_ValueError, "set_num_threads: num_threads must be >= 1");
    return nullptr;
  }
  at::set_num_threads(static_cast<int>(n));
  Py_RETURN_NONE;
}

PyObject* cpu_isa(PyObject*, PyObject*) {
  return PyUnicode_FromString(ffkernels::cpu::cpu_isa_name(ffkernels::cpu::best_cpu_isa()));
}

PyObject* cache_info(PyObject*, PyObject*) {
  const ffkernels::cpu::CacheInfo info = ffkernels::cpu::cache_info();
  return Py_BuildValue("{s:L,s:s}", "llc_bytes", static_cast<long long>(info.llc_bytes), "source", info.source);
}

PyObject* aggregate_schedule(PyObject*, PyObject* args) {
  long long rows = 0, feats = 0, elem = 0;
  if (!PyArg_ParseTuple(args, "LLL", &rows, &feats, &elem)) return nullptr;
  if (rows < 0 || feats < 0 || elem <= 0) {
    PyErr_SetString(PyExc_ValueError, "aggregate_schedule: num_rows, num_features >= 0 and elem_bytes > 0 required");
    return nullptr;
  }
  const ffkernels::cpu::AggregateSchedule s = ffkernels::cpu::aggregate_schedule(rows, feats, elem);
  return Py_BuildValue("{s:L,s:L,s:L}", "tile_features", static_cast<long long>(s.tile_features),
                       "prefetch_distance", static_cast<long long>(s.prefetch_distance), "llc_bytes",
                       static_cast<long long>(s.llc_bytes));
}

PyObject* build_info(PyObject*, PyObject*) {
  PyObject* info = PyDict_New();
  if (info == nullptr) return nullptr;
  auto put = [&](const char* key, PyObject* value) {
    if (value != nullptr) {
      PyDict_SetItemString(info, key, value);
      Py_DECREF(value);
    }
  };
  put("version", PyUnicode_FromString(FFKERNELS_VERSION));
  put("torch_version", PyUnicode_FromString(FFKERNELS_TORCH_VERSION));
  put("cuda", PyBool_FromLong(compiled_with_cuda() ? 1 : 0));
#ifdef __VERSION__
  put("compiler", PyUnicode_FromString(__VERSION__));
#endif
#ifdef _OPENMP
  put("openmp", PyLong_FromLong(_OPENMP));
#else
  put("openmp", Py_NewRef(Py_None));
#endif
  put("cpu_isa", PyUnicode_FromString(ffkernels::cpu::cpu_isa_name(ffkernels::cpu::best_cpu_isa())));
  put("num_threads", PyLong_FromLong(at::get_num_threads()));
  put("llc_bytes", PyLong_FromLongLong(ffkernels::cpu::cache_info().llc_bytes));
  put("llc_source", PyUnicode_FromString(ffkernels::cpu::cache_info().source));
  return info;
}

PyMethodDef methods[] = {
    {"has_cuda", has_cuda, METH_NOARGS, "Whether the CUDA kernels were compiled into this build."},
    {"num_threads", num_threads, METH_NOARGS, "Threads the CPU kernels use (torch.get_num_threads())."},
    {"set_num_threads", set_num_threads, METH_O, "Set the threads of the CPU kernels (torch.set_num_threads)."},
    {"cpu_isa", cpu_isa, METH_NOARGS,
     "Instruction set of the aggregate kernels picked at run time (FFKERNELS_CPU_ISA=baseline forces portable code)."},
    {"build_info", build_info, METH_NOARGS, "How the extension was built: version, torch, compiler, OpenMP, CUDA."},
    {"cache_info", cache_info, METH_NOARGS,
     "Last-level cache size the CPU aggregation schedules for, and where it came from (sysfs, sysconf, fallback, "
     "env FFKERNELS_LLC_BYTES)."},
    {"aggregate_schedule", aggregate_schedule, METH_VARARGS,
     "aggregate_schedule(num_rows, num_features, elem_bytes) -> the CPU aggregation's schedule for that size: "
     "feature tile width and prefetch distance."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C",
                          "Compiled kernels of ffkernels; importing registers torch.ops.ffkernels.*", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
