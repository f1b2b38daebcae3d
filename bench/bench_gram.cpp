// Throughput of the Gram-matrix driver, and of the recursion's arithmetic alone.
//
//   bench_gram [--n 1000,4000] [--depth 3,10] [--activation relu,erf] [--dim 64]
//              [--threads 2] [--repeats 3] [--float]
//
// For every configuration it prints two rows:
//   gram      ntkcore::gram on N x dim Gaussian inputs (symmetric: N (N + 1) / 2 entries);
//   roofline  the same number of entry-layers through the per-pair dual maps alone, on
//             in-cache tiles: no GEMM, no input layer, no per-point recursion, no output.
// Throughput is Gram entries x layers per second (best of the repeats).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ntkcore/gram.hpp"

namespace {

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) out.push_back(item);
    return out;
}

struct Options {
    std::vector<long> sizes{1000, 4000, 8000};
    std::vector<long> depths{3, 10};
    std::vector<std::string> activations{"relu", "erf"};
    long dim = 64;
    int threads = 2;
    int repeats = 3;
    bool single = false;
};

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "missing value for %s\n", arg.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        auto longs = [&](const std::string& s) {
            std::vector<long> v;
            for (const auto& x : split(s)) v.push_back(std::stol(x));
            return v;
        };
        if (arg == "--n")
            o.sizes = longs(value());
        else if (arg == "--depth")
            o.depths = longs(value());
        else if (arg == "--activation")
            o.activations = split(value());
        else if (arg == "--dim")
            o.dim = std::stol(value());
        else if (arg == "--threads")
            o.threads = std::stoi(value());
        else if (arg == "--repeats")
            o.repeats = std::stoi(value());
        else if (arg == "--float")
            o.single = true;
        else {
            std::fprintf(stderr, "unknown argument %s (see the comment at the top of bench_gram.cpp)\n",
                         arg.c_str());
            std::exit(2);
        }
    }
    return o;
}

// The network of bench/RESULTS.md: relu W_std = sqrt(2), erf W_std = 1.5; b_std = 0.1.
ntkcore::Network network(const std::string& activation, long depth) {
    ntkcore::Network net;
    double w_var = 2.0;
    if (activation == "relu") {
        net.activation = {ntkcore::Family::ab_relu, 0.0, 1.0, 0.0, nullptr};
    } else if (activation == "erf") {
        net.activation = {ntkcore::Family::erf, 1.0, 1.0, 0.0, nullptr};
        w_var = 2.25;
    } else {
        std::fprintf(stderr, "activation must be relu or erf\n");
        std::exit(2);
    }
    net.w_var.assign(std::size_t(depth) + 1, w_var);
    net.b_var.assign(std::size_t(depth) + 1, 0.01);
    return net;
}

template <class F>
double best_seconds(int repeats, F&& run) {
    double best = 1e300;
    for (int r = 0; r < repeats; ++r) {
        const auto start = std::chrono::steady_clock::now();
        run();
        best =
            std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    return best;
}

template <class T>
void run(const Options& o) {
    std::printf("%-8s %-4s %6s %5s %7s %10s %14s\n", "mode", "act", "N", "depth", "threads", "seconds",
                "entry-layers/s");
    std::mt19937_64 rng(0);
    std::normal_distribution<double> normal;
    for (const auto& activation : o.activations) {
        for (long depth : o.depths) {
            const ntkcore::Network net = network(activation, depth);
            for (long n : o.sizes) {
                ntkcore::RowMatrix<T> x(n, o.dim);
                for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = T(normal(rng));
                ntkcore::RowMatrix<T> k(n, n), theta(n, n);
                ntkcore::GramOptions opt;
                opt.n_threads = o.threads;
                const double entry_layers = double(n) * double(n + 1) / 2.0 * double(depth);
                const double t_gram =
                    best_seconds(o.repeats, [&] { ntkcore::gram<T>(net, x, nullptr, k, theta, opt); });
                std::printf("%-8s %-4s %6ld %5ld %7d %10.4f %14.4g\n", "gram", activation.c_str(), n, depth,
                            o.threads, t_gram, entry_layers / t_gram);

                // Roofline: the per-pair maps over tiles of realistic states, nothing else.
                const std::size_t tile = opt.tile_rows;
                const std::size_t tiles = std::size_t(entry_layers / double(depth) / double(tile * tile)) + 1;
                std::vector<T> r(tile), ir(tile), q(tile), ra(tile);
                for (std::size_t i = 0; i < tile; ++i) {
                    q[i] = T(0.5 + 0.01 * double(i));
                    r[i] = std::sqrt(q[i]);
                    ir[i] = T(1) / r[i];
                    ra[i] = T(0.7);
                }
                const ntkcore::LayerInputs<T> in{r.data(), r.data(),  ir.data(), ir.data(), q.data(),
                                                 q.data(), ra.data(), ra.data(), T(1)};
                const ntkcore::DenseStep<T> dense{T(1), T(0.01), T(1), T(1), T(0.01)};
                volatile T sink = 0;
                const double t_roof = best_seconds(o.repeats, [&] {
                    ntkcore::visit_family<T>(net.activation, [&](const auto& act) {
#pragma omp parallel num_threads(o.threads)
                        {
                            std::vector<T> c(tile * tile), d(tile * tile), th(tile * tile);
                            T acc = 0;
#pragma omp for schedule(static)
                            for (long t = 0; t < long(tiles); ++t) {
                                for (std::size_t k2 = 0; k2 < c.size(); ++k2) {
                                    c[k2] = T(0.3) * r[k2 % tile] * r[k2 / tile] + T(1e-3) * T(t % 7);
                                    d[k2] = r[k2 % tile] * r[k2 % tile] * r[k2 / tile] * r[k2 / tile] -
                                            c[k2] * c[k2];
                                    th[k2] = c[k2];
                                }
                                for (long l = 0; l < depth; ++l)
                                    act.pairs(tile, tile, in, c.data(), d.data(), th.data(), dense);
                                acc += th[std::size_t(t) % th.size()];
                            }
#pragma omp critical
                            sink = sink + acc;
                        }
                    });
                });
                const double roof_entry_layers = double(tiles) * double(tile * tile) * double(depth);
                std::printf("%-8s %-4s %6ld %5ld %7d %10.4f %14.4g\n", "roofline", activation.c_str(), n,
                            depth, o.threads, t_roof * entry_layers / roof_entry_layers,
                            roof_entry_layers / t_roof);
                std::fflush(stdout);
            }
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    if (o.single)
        run<float>(o);
    else
        run<double>(o);
    return 0;
}
