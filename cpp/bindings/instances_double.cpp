// The double instantiations of the Gram-matrix driver (gram.hpp), the extreme eigen solvers
// (spectral.hpp, symmetry.hpp) and the kernel products (solve.hpp) that the bindings call: one
// translation unit, since all of them run the kernel tiles (instances.hpp); the float ones are in
// instances_float.cpp.  Compiled once per instruction set (CMakeLists.txt).
#include "instances.hpp"

NTKCORE_KERNEL_INSTANCES(, double)
NTKCORE_SPECTRAL_INSTANCES(, double)
NTKCORE_SOLVE_INSTANCES(, double)
