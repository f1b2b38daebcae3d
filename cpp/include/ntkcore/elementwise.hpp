// Smooth activations known by name, for the Gauss-Hermite family (docs/math/4-gauss-hermite.md) and the
// finite-width networks: phi and phi', each written so that it neither
// overflows nor cancels for large |x| (log1p/expm1 forms, the logistic from exp(-|x|)).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>

#include "network.hpp"

namespace ntkcore {

enum class Builtin { tanh, sigmoid, softplus, gelu, silu, elu, selu, mish, sin, cos, erf };

inline Builtin builtin_from_name(const std::string& name) {
    static const struct {
        const char* name;
        Builtin id;
    } table[] = {{"tanh", Builtin::tanh}, {"sigmoid", Builtin::sigmoid}, {"softplus", Builtin::softplus},
                 {"gelu", Builtin::gelu}, {"silu", Builtin::silu},       {"elu", Builtin::elu},
                 {"selu", Builtin::selu}, {"mish", Builtin::mish},       {"sin", Builtin::sin},
                 {"cos", Builtin::cos},   {"erf", Builtin::erf}};
    for (const auto& entry : table)
        if (name == entry.name) return entry.id;
    throw std::invalid_argument("unknown built-in activation '" + name + "'");
}

namespace detail {

constexpr double selu_scale = 1.0507009873554804934193349852946;
constexpr double selu_alpha = 1.6732632423543772848170429916717;
constexpr double inv_sqrt2 = 0.70710678118654752440084436210484903;
constexpr double inv_sqrt_2pi = 0.39894228040143267793994605993438187;
constexpr double two_over_sqrt_pi = 1.1283791670955125738961589031215452;

// The logistic 1 / (1 + e^-x), exact to rounding for either sign of x.
template <class T>
T logistic(T x) {
    const T e = std::exp(-std::abs(x));
    return x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

// log(1 + e^x) = max(x, 0) + log1p(e^-|x|).
template <class T>
T softplus(T x) {
    return std::max(x, T(0)) + std::log1p(std::exp(-std::abs(x)));
}

}  // namespace detail

// phi of a built-in, in T (double for the Gauss-Hermite tables, the MLP's type in the
// finite-width networks).
template <class T>
T builtin_phi(Builtin f, T x) {
    switch (f) {
        case Builtin::tanh:
            return std::tanh(x);
        case Builtin::sigmoid:
            return detail::logistic(x);
        case Builtin::softplus:
            return detail::softplus(x);
        case Builtin::gelu:
            return T(0.5) * x * std::erfc(-x * T(detail::inv_sqrt2));
        case Builtin::silu:
            return x * detail::logistic(x);
        case Builtin::elu:
            return x > T(0) ? x : std::expm1(x);
        case Builtin::selu:
            return T(detail::selu_scale) * (x > T(0) ? x : T(detail::selu_alpha) * std::expm1(x));
        case Builtin::mish:
            return x * std::tanh(detail::softplus(x));
        case Builtin::sin:
            return std::sin(x);
        case Builtin::cos:
            return std::cos(x);
        case Builtin::erf:
            return std::erf(x);
    }
    return T(0);
}

// phi'; at the kink of selu (x = 0) the right derivative.
template <class T>
T builtin_dphi(Builtin f, T x) {
    switch (f) {
        case Builtin::tanh: {
            const T t = std::tanh(x);
            return (T(1) - t) * (T(1) + t);
        }
        case Builtin::sigmoid:
            return detail::logistic(x) * detail::logistic(-x);
        case Builtin::softplus:
            return detail::logistic(x);
        case Builtin::gelu:
            return T(0.5) * std::erfc(-x * T(detail::inv_sqrt2)) +
                   x * T(detail::inv_sqrt_2pi) * std::exp(T(-0.5) * x * x);
        case Builtin::silu: {
            const T s = detail::logistic(x);
            return s + x * s * detail::logistic(-x);
        }
        case Builtin::elu:
            return x > T(0) ? T(1) : std::exp(x);
        case Builtin::selu:
            return T(detail::selu_scale) * (x >= T(0) ? T(1) : T(detail::selu_alpha) * std::exp(x));
        case Builtin::mish: {
            const T sp = detail::softplus(x), t = std::tanh(sp);
            return t + x * (T(1) - t) * (T(1) + t) * detail::logistic(x);
        }
        case Builtin::sin:
            return std::cos(x);
        case Builtin::cos:
            return -std::sin(x);
        case Builtin::erf:
            return T(detail::two_over_sqrt_pi) * std::exp(-x * x);
    }
    return T(0);
}

// phi(z) = a f(b z + shift) + offset in place for n values, and phi' into dphi unless it is null.
template <class T>
void scaled_builtin(Builtin f, T a, T b, T shift, T offset, std::size_t n, T* z, T* dphi) {
    for (std::size_t i = 0; i < n; ++i) {
        const T u = b * z[i] + shift;
        if (dphi) dphi[i] = a * b * builtin_dphi(f, u);
        z[i] = a * builtin_phi(f, u) + offset;
    }
}

// The numerical activation of a built-in: phi and phi' in the core, safe on any thread.
inline NumericalFunction builtin_numerical(Builtin f, std::size_t degree) {
    NumericalFunction fn;
    fn.phi = [f](const double* x, std::size_t n, double* out) {
        for (std::size_t i = 0; i < n; ++i) out[i] = builtin_phi(f, x[i]);
    };
    fn.dphi = [f](const double* x, std::size_t n, double* out) {
        for (std::size_t i = 0; i < n; ++i) out[i] = builtin_dphi(f, x[i]);
    };
    fn.degree = degree;
    fn.thread_safe = true;
    return fn;
}

}  // namespace ntkcore
