// HETDRO_HD marks a function that runs on the host and in CUDA kernels: the intricate arithmetic
// of a kernel lives in such functions (kernels/*.h), so the CPU tests check it on every CI run.
#pragma once

#if defined(__CUDACC__)
#define HETDRO_HD __host__ __device__
#else
#define HETDRO_HD
#endif
