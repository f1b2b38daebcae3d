// The instantiations of layer networks (conv_kernels.hpp) that the bindings call; compiled
// once per instruction set (CMakeLists.txt).
#include "instances.hpp"

template <class T>
void layer_diagonal_values(const std::vector<ntkcore::Layer>& layers,
                           const Eigen::Ref<const ntkcore::RowMatrix<T>>& x, ntkcore::Grid g,
                           std::size_t channels, int n_threads, const std::function<bool()>& should_stop,
                           T* nngp, T* ntk) {
    ntkcore::LayerKernels<T> kernels(layers, x, g, nullptr, g, channels);
    kernels.prepare(n_threads, should_stop);
    for (std::size_t i = 0; i < std::size_t(x.rows()); ++i) {
        nngp[i] = T(kernels.chain(i).nngp);
        ntk[i] = T(kernels.chain(i).ntk);
    }
}

NTKCORE_LAYER_INSTANCES(, double)
NTKCORE_LAYER_INSTANCES(, float)
