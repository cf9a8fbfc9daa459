// <Eigen/Dense> for the tests (reference eigensolvers, orthogonal bases), without GCC 12's
// -Wmaybe-uninitialized false positive inside its own AVX-512 intrinsics (`__m512 __Y = __Y;`),
// which Eigen reaches under -march=native: the warning is about the compiler's header.
#pragma once

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Dense>
#pragma GCC diagnostic pop
