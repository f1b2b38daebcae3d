// The core's entry points that the bindings call, as explicit instantiations: declared here
// (extern: the binding files, compiled once, do not instantiate them) and defined in the
// instances_*.cpp files, which CMakeLists.txt compiles once per instruction set.  Only those
// files contain the per-entry loops, so only they need the wider vector flags.  The Gram
// driver, the eigen solvers and the kernel products all run the kernel tiles (kernel_tiles.hpp),
// the costliest code to compile: their instances are compiled together, once per scalar type
// (instances_double.cpp, instances_float.cpp), so that the tiles are compiled once for each.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <vector>

#include "ntkcore/conv_kernels.hpp"
#include "ntkcore/empirical.hpp"
#include "ntkcore/empirical_layers.hpp"
#include "ntkcore/gram.hpp"
#include "ntkcore/solve.hpp"
#include "ntkcore/spectral.hpp"
#include "ntkcore/symmetry.hpp"

// K(x, x) and Theta(x, x) of a layer network for each row of x (N x d) into nngp and ntk (N).
template <class T>
void layer_diagonal_values(const std::vector<ntkcore::Layer>& layers,
                           const Eigen::Ref<const ntkcore::RowMatrix<T>>& x, ntkcore::Grid g,
                           std::size_t channels, int n_threads, const std::function<bool()>& should_stop,
                           T* nngp, T* ntk);

// hyper_gram (hyper_gradients.hpp, float64 only) into value (N1 x N2) and gradient (N1 x 2 N2).
void hyper_gram_values(const ntkcore::Network& net, bool nngp,
                       const Eigen::Ref<const ntkcore::RowMatrix<double>>& x1,
                       const Eigen::Ref<const ntkcore::RowMatrix<double>>* x2,
                       Eigen::Ref<ntkcore::RowMatrix<double>> value,
                       Eigen::Ref<ntkcore::RowMatrix<double>> gradient, const ntkcore::GramOptions& opt);

// y = K(x1, x2) v (solve.hpp), or K(x1, x1) v by the symmetric tiles when x2 is null; defined here,
// since both instances_double.cpp and instances_float.cpp instantiate it.
template <class T>
void kernel_product_values(const ntkcore::Network& net, const Eigen::Ref<const ntkcore::RowMatrix<T>>& x1,
                           const Eigen::Ref<const ntkcore::RowMatrix<T>>* x2, ntkcore::KernelKind kind,
                           const Eigen::Ref<const ntkcore::ColMatrix<T>>& v,
                           Eigen::Ref<ntkcore::ColMatrix<T>> y, const ntkcore::OperatorOptions& opt,
                           std::atomic<std::size_t>& done) {
    const ntkcore::KernelTiles<T> tiles(net, x1, x2, opt.should_stop);
    if (x2)
        ntkcore::cross_kernel_product<T>(tiles, kind, v, y, opt, done);
    else
        ntkcore::symmetric_kernel_product<T>(tiles, kind, v, y, opt, done);
}

// EXTERN is `extern` for the declarations and empty for the definitions.
#define NTKCORE_KERNEL_INSTANCES(EXTERN, T)                                                \
    EXTERN template void ntkcore::gram<T>(                                                 \
        const ntkcore::Network&, const Eigen::Ref<const ntkcore::RowMatrix<T>>&,           \
        const Eigen::Ref<const ntkcore::RowMatrix<T>>*, Eigen::Ref<ntkcore::RowMatrix<T>>, \
        Eigen::Ref<ntkcore::RowMatrix<T>>, const ntkcore::GramOptions&);                   \
    EXTERN template void ntkcore::diagonal<T>(                                             \
        const ntkcore::Network&, const Eigen::Ref<const ntkcore::RowMatrix<T>>&,           \
        Eigen::Ref<ntkcore::Vector<T>>, Eigen::Ref<ntkcore::Vector<T>>, const std::function<bool()>&);

#define NTKCORE_EMPIRICAL_INSTANCES(EXTERN, T)                                                              \
    EXTERN template ntkcore::Forward<T> ntkcore::forward<T>(const ntkcore::MLP<T>&,                         \
                                                            const Eigen::Ref<const ntkcore::RowMatrix<T>>&, \
                                                            bool, const ntkcore::GramOptions&);             \
    EXTERN template void ntkcore::empirical_ntk<T>(                                                         \
        const ntkcore::MLP<T>&, const Eigen::Ref<const ntkcore::RowMatrix<T>>&,                             \
        const Eigen::Ref<const ntkcore::RowMatrix<T>>*, ntkcore::NtkOutput,                                 \
        Eigen::Ref<ntkcore::RowMatrix<T>>, const ntkcore::GramOptions&);                                    \
    EXTERN template double ntkcore::loss_gradient<T>(                                                       \
        const ntkcore::MLP<T>&, const Eigen::Ref<const ntkcore::RowMatrix<T>>&,                             \
        const Eigen::Ref<const ntkcore::RowMatrix<T>>&, std::vector<Eigen::Map<ntkcore::RowMatrix<T>>>&,    \
        std::vector<Eigen::Map<ntkcore::Vector<T>>>&, const ntkcore::GramOptions&);                         \
    EXTERN template void ntkcore::layer_empirical_ntk<T>(                                                   \
        const std::vector<ntkcore::LayerScales>&, const std::vector<ntkcore::LayerFactors<T>>&,             \
        const std::vector<ntkcore::LayerFactors<T>>*, Eigen::Index, ntkcore::NtkOutput,                     \
        Eigen::Ref<ntkcore::RowMatrix<T>>, const ntkcore::GramOptions&);                                    \
    EXTERN template void ntkcore::pointwise_activation<T>(const ntkcore::Activation&, std::size_t, T*, T*,  \
                                                          const ntkcore::GramOptions&);

#define NTKCORE_SPECTRAL_INSTANCES(EXTERN, T)                                                         \
    EXTERN template ntkcore::SymmetryReport ntkcore::symmetry_report<T>(                              \
        const Eigen::Ref<const ntkcore::RowMatrix<T>>&, int, const std::function<bool()>&);           \
    EXTERN template ntkcore::EigenResult<T> ntkcore::dense_eigenpairs<T>(                             \
        const Eigen::Ref<const ntkcore::RowMatrix<T>>&, std::size_t, ntkcore::Which,                  \
        const ntkcore::EigenOptions&, const ntkcore::OperatorOptions&);                               \
    EXTERN template ntkcore::EigenResult<T> ntkcore::kernel_eigenpairs<T>(                            \
        const ntkcore::Network&, const Eigen::Ref<const ntkcore::RowMatrix<T>>&, ntkcore::KernelKind, \
        std::size_t, ntkcore::Which, const ntkcore::EigenOptions&, const ntkcore::OperatorOptions&);

#define NTKCORE_LAYER_INSTANCES(EXTERN, T)                                                                  \
    EXTERN template void ntkcore::layer_gram<T>(                                                            \
        const std::vector<ntkcore::Layer>&, const Eigen::Ref<const ntkcore::RowMatrix<T>>&, ntkcore::Grid,  \
        const Eigen::Ref<const ntkcore::RowMatrix<T>>*, ntkcore::Grid, std::size_t,                         \
        Eigen::Ref<ntkcore::RowMatrix<T>>, Eigen::Ref<ntkcore::RowMatrix<T>>, const ntkcore::GramOptions&); \
    EXTERN template void layer_diagonal_values<T>(                                                          \
        const std::vector<ntkcore::Layer>&, const Eigen::Ref<const ntkcore::RowMatrix<T>>&, ntkcore::Grid,  \
        std::size_t, int, const std::function<bool()>&, T*, T*);

#define NTKCORE_SOLVE_INSTANCES(EXTERN, T)                                                 \
    EXTERN template void kernel_product_values<T>(                                         \
        const ntkcore::Network&, const Eigen::Ref<const ntkcore::RowMatrix<T>>&,           \
        const Eigen::Ref<const ntkcore::RowMatrix<T>>*, ntkcore::KernelKind,               \
        const Eigen::Ref<const ntkcore::ColMatrix<T>>&, Eigen::Ref<ntkcore::ColMatrix<T>>, \
        const ntkcore::OperatorOptions&, std::atomic<std::size_t>&);

#define NTKCORE_ALL_INSTANCES(EXTERN, T)   \
    NTKCORE_KERNEL_INSTANCES(EXTERN, T)    \
    NTKCORE_EMPIRICAL_INSTANCES(EXTERN, T) \
    NTKCORE_SPECTRAL_INSTANCES(EXTERN, T)  \
    NTKCORE_LAYER_INSTANCES(EXTERN, T)     \
    NTKCORE_SOLVE_INSTANCES(EXTERN, T)

NTKCORE_ALL_INSTANCES(extern, double)
NTKCORE_ALL_INSTANCES(extern, float)
