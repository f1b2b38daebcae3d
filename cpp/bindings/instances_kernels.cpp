// The instantiations of the Gram-matrix driver (gram.hpp) that the bindings call; compiled once per
// instruction set (CMakeLists.txt).
#include "instances.hpp"

NTKCORE_KERNEL_INSTANCES(, double)
NTKCORE_KERNEL_INSTANCES(, float)
