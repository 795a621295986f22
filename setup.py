"""Build of the compiled extension ``ffkernels._C`` (C++/OpenMP CPU kernels, CUDA when enabled).

Install torch first, then build against it without an isolated build environment::

    pip install --no-build-isolation .        # or -e . for development

CUDA kernels (``csrc/cuda/*.cu``) are compiled when torch has CUDA and nvcc is found
(``CUDA_HOME``); ``FFKERNELS_WITH_CUDA=1`` forces them, ``FFKERNELS_WITH_CUDA=0`` disables them.
``MAX_JOBS`` caps the parallel compile jobs (ninja).
"""
import glob
import os
import re

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def read_version():
    with open(os.path.join(ROOT, "ffkernels", "__init__.py")) as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def with_cuda():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    flag = os.environ.get("FFKERNELS_WITH_CUDA", "").strip()
    if flag == "0":
        return False
    if flag == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None and bool(glob.glob("csrc/cuda/*.cu"))


def extensions():
    import torch
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    version = read_version()
    sources = sorted(glob.glob("python/*.cpp") + glob.glob("csrc/ops/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    defines = [("FFKERNELS_VERSION", f'"{version}"'), ("FFKERNELS_TORCH_VERSION", f'"{torch.__version__}"')]
    # Portable x86-64 code (no -march=native: the wheel must run on other machines); the
    # kernels also carry AVX2 variants (the aggregation an AVX-512 one too) chosen at run time
    # (csrc/cpu/cpu_isa.h).
    cxx = ["-O3", "-g0", "-fopenmp", "-fno-math-errno", "-fvisibility=hidden", "-Wno-unused-parameter"]
    extra_link = ["-fopenmp"]
    cuda = with_cuda()
    kwargs = dict(include_dirs=[os.path.join(ROOT, "csrc")], define_macros=defines,
                  extra_link_args=extra_link)
    if cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        defines.append(("FFKERNELS_WITH_CUDA", None))
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo", "-DFFKERNELS_WITH_CUDA"]
        return [CUDAExtension("ffkernels._C", sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs)]
    return [CppExtension("ffkernels._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)]


def main():
    from torch.utils.cpp_extension import BuildExtension

    setup(
        packages=find_packages(include=["ffkernels", "ffkernels.*"]),
        package_data={"ffkernels": ["datasets/*.npz", "datasets/data/*.npz", "datasets/data/*.json", "datasets/data/*.md"]},
        include_package_data=True,
        ext_modules=extensions(),
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
        zip_safe=False,
    )


if __name__ == "__main__":
    main()
