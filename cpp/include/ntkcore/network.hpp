// The architecture: a fully-connected network of `depth` activations between
// depth + 1 dense layers (docs/math/1-parameterization.md), described by its activation, the per-layer
// weight and bias variances and its parameterization (docs/math/1-parameterization.md to 2-recursion.md).
#pragma once

#include <cmath>
#include <cstddef>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace ntkcore {

// Activation families: closed-form dual maps (docs/math/3-dual-maps.md), or Gauss-Hermite
// (docs/math/4-gauss-hermite.md).
enum class Family {
    ab_relu,             // a x (x < 0), b x (x >= 0): ReLU, leaky ReLU, abs, identity
    sign,                // sign(x)
    erf,                 // a erf(b x) + c
    sin,                 // a sin(b x + c) (cos is sin with c + pi/2)
    gelu,                // x Phi(x), Phi the standard normal CDF
    rectified_monomial,  // max(x, 0)^n, n = a in 0..4 (n = 0: the step 1[x > 0])
    numerical,           // any phi known pointwise (NumericalFunction)
};

// An activation known only pointwise: phi and, when known, phi' at n points at once.  They
// may call back into Python, so the core calls them only from the thread that builds the
// kernel tiles, unless `thread_safe`.
struct NumericalFunction {
    using Batch = std::function<void(const double* x, std::size_t n, double* out)>;
    Batch phi;
    Batch dphi;              // empty: Tdot from phi alone (Price's theorem)
    std::size_t degree = 0;  // Gauss-Hermite nodes; 0: chosen per layer to full precision
    bool thread_safe = false;
    std::string name = "numerical activation";  // for messages
    // Told when a fixed degree leaves an estimated error above the automatic degree's
    // target (hermite_series.hpp); may throw to refuse the result.  Empty: not reported.
    std::function<void(const std::string& message)> warn;
};

struct Activation {
    Family family = Family::ab_relu;
    double a = 0.0;
    double b = 1.0;
    double c = 0.0;
    std::shared_ptr<const NumericalFunction> numerical;  // Family::numerical only
};

struct Network {
    Activation activation;
    std::vector<double> w_var;  // sigma_w^2 of each dense layer, depth + 1 entries
    std::vector<double> b_var;  // sigma_b^2 of each dense layer, depth + 1 entries
    // Standard parameterization: the NTK's dense step needs the fan-in of each layer, the
    // input dimension (given with the inputs) and then the hidden widths n_1..n_depth.
    bool standard = false;
    std::vector<double> widths;  // depth entries when standard, else empty

    std::size_t depth() const { return w_var.size() - 1; }

    void validate() const {
        if (w_var.empty() || w_var.size() != b_var.size())
            throw std::invalid_argument(
                "network: w_var and b_var need the same number (depth + 1 >= 1) of entries");
        for (std::size_t l = 0; l < w_var.size(); ++l) {
            if (!(std::isfinite(w_var[l]) && w_var[l] >= 0.0 && std::isfinite(b_var[l]) && b_var[l] >= 0.0))
                throw std::invalid_argument("network: variances of layer " + std::to_string(l) +
                                            " must be finite and >= 0");
        }
        if (widths.size() != (standard ? depth() : 0))
            throw std::invalid_argument(
                "network: widths needs one entry per hidden layer in the standard "
                "parameterization and none in the NTK parameterization");
        for (double n : widths)
            if (!(std::isfinite(n) && n >= 1.0))
                throw std::invalid_argument("network: widths must be finite and >= 1");
        const Activation& act = activation;
        if (!(std::isfinite(act.a) && std::isfinite(act.b) && std::isfinite(act.c)))
            throw std::invalid_argument("network: activation parameters must be finite");
        if (act.family == Family::rectified_monomial &&
            !(act.a == std::floor(act.a) && act.a >= 0.0 && act.a <= 4.0))
            throw std::invalid_argument("network: rectified monomial needs an integer n in 0..4");
        if (act.family == Family::numerical && !(act.numerical && act.numerical->phi))
            throw std::invalid_argument("network: a numerical activation needs its function phi");
    }
};

}  // namespace ntkcore
