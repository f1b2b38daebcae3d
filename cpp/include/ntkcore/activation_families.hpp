// The activation families, each one unit (families/*.hpp, hermite_series.hpp): a struct
// templated on the scalar type with
//     id, name                      its Family (network.hpp) and its name in network specs,
//     Fam(act), variance, derivative, pairs (or tabulate)   its dual maps (dual_maps.hpp),
//     homogeneous                   whether T(k Sigma) = k T(Sigma) (recursion.hpp),
//     Tangent                       its derivative maps for hyper_gradients.hpp, or void,
//     pointwise(act, n, z, dphi)    phi and phi' for the finite-width networks (empirical.hpp).
// This list is the one dispatch point from an Activation to its family: adding a closed form
// means one header, one Family entry and one line here (and its tests).
#pragma once

#include <stdexcept>
#include <string>

#include "families/ab_relu.hpp"
#include "families/erf.hpp"
#include "families/gelu.hpp"
#include "families/rectified_monomial.hpp"
#include "families/sign.hpp"
#include "families/sin.hpp"
#include "hermite_series.hpp"
#include "network.hpp"

namespace ntkcore {

template <class... Fams>
struct FamilyList {};

template <class T>
using ActivationFamilies =
    FamilyList<ABRelu<T>, Sign<T>, Erf<T>, Sin<T>, Gelu<T>, RectifiedMonomial<T>, HermiteSeries<T>>;

// The type of a family, as a value: body(FamilyTag<Fam>{}) names Fam without building it.
template <class Fam>
struct FamilyTag {
    using type = Fam;
};

// body(FamilyTag<Fam>{}) for every family, in the order of the list.
namespace detail {
template <class F, class... Fams>
void for_each_in(F& body, FamilyList<Fams...>) {
    (body(FamilyTag<Fams>{}), ...);
}
}  // namespace detail

template <class T, class F>
void for_each_family(F&& body) {
    detail::for_each_in(body, ActivationFamilies<T>{});
}

// body(FamilyTag<Fam>{}) for the family `id`, in scalar type T.
template <class T, class F>
void visit_family_type(Family id, F&& body) {
    bool found = false;
    for_each_family<T>([&](auto tag) {
        if (decltype(tag)::type::id == id && !found) {
            found = true;
            body(tag);
        }
    });
    if (!found) throw std::invalid_argument("unknown activation family");
}

// body(Fam(act)) for the family of `act`: its dual maps in scalar type T.
template <class T, class F>
void visit_family(const Activation& act, F&& body) {
    visit_family_type<T>(act.family, [&](auto tag) { body(typename decltype(tag)::type(act)); });
}

// The family of a name in network specs (Fam::name); std::invalid_argument for an unknown one.
inline Family family_from_name(const std::string& name) {
    bool found = false;
    Family id = Family::numerical;
    for_each_family<double>([&](auto tag) {
        if (!found && name == decltype(tag)::type::name) {
            found = true;
            id = decltype(tag)::type::id;
        }
    });
    if (!found) throw std::invalid_argument("unknown activation family '" + name + "'");
    return id;
}

}  // namespace ntkcore
