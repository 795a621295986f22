// The Python module ffkernels._C. Loading it runs the static TORCH_LIBRARY registrations
// of csrc/ (which define torch.ops.ffkernels.*); the module itself only reports how it
// was built. Plain CPython API on purpose: no pybind11 / torch/extension.h (which would
// add most of a minute to every build of this file).
#include <Python.h>

#include <ATen/Parallel.h>

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
  return info;
}

PyMethodDef methods[] = {
    {"has_cuda", has_cuda, METH_NOARGS, "Whether the CUDA kernels were compiled into this build."},
    {"num_threads", num_threads, METH_NOARGS, "Threads the CPU kernels use (torch.get_num_threads())."},
    {"set_num_threads", set_num_threads, METH_O, "Set the threads of the CPU kernels (torch.set_num_threads)."},
    {"cpu_isa", cpu_isa, METH_NOARGS,
     "Instruction set of the aggregate kernels picked at run time (FFKERNELS_CPU_ISA=baseline forces portable code)."},
    {"build_info", build_info, METH_NOARGS, "How the extension was built: version, torch, compiler, OpenMP, CUDA."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C",
                          "Compiled kernels of ffkernels; importing registers torch.ops.ffkernels.*", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
