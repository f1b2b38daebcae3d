// The float instantiations of the Gram-matrix driver (gram.hpp), the extreme eigen solvers
// (spectral.hpp, symmetry.hpp) and the kernel products (solve.hpp) that the bindings call: one
// translation unit, since all of them run the kernel tiles (instances.hpp); the double ones are in
// instances_double.cpp.  Compiled once per instruction set (CMakeLists.txt).
#include "instances.hpp"

NTKCORE_KERNEL_INSTANCES(, float)
NTKCORE_SPECTRAL_INSTANCES(, float)
NTKCORE_SOLVE_INSTANCES(, float)
