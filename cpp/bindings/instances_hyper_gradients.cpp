// The hyperparameter gradients (hyper_gradients.hpp) that the bindings call; compiled once per
// instruction set (CMakeLists.txt).
#include "instances.hpp"
#include "ntkcore/hyper_gradients.hpp"

void hyper_gram_values(const ntkcore::Network& net, bool nngp,
                       const Eigen::Ref<const ntkcore::RowMatrix<double>>& x1,
                       const Eigen::Ref<const ntkcore::RowMatrix<double>>* x2,
                       Eigen::Ref<ntkcore::RowMatrix<double>> value,
                       Eigen::Ref<ntkcore::RowMatrix<double>> gradient, const ntkcore::GramOptions& opt) {
    ntkcore::hyper_gram(net, nngp, x1, x2, value, gradient, opt);
}
