// Threads for the core: a dynamically scheduled loop that transports exceptions and
// polls an interruption callback (the Gram driver, operators and series tables use it).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <stdexcept>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ntkcore {

// Thrown when the should_stop callback asked the computation to end early.
struct Interrupted : std::runtime_error {
    Interrupted() : std::runtime_error("computation interrupted") {}
};

namespace detail {

inline int thread_index() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

inline int resolve_threads(int requested, std::size_t work_items) {
#ifdef _OPENMP
    const int available = requested > 0 ? requested : omp_get_max_threads();
#else
    const int available = 1;
    (void)requested;
#endif
    return int(std::max<std::size_t>(1, std::min<std::size_t>(std::size_t(available), work_items)));
}

// Runs body(t) for t in [0, count) on `threads` threads, dynamically scheduled.  The calling
// thread polls should_stop (at most every 50 ms); a true answer or an exception in any body
// ends the loop, and then Interrupted or that exception is thrown here.
template <class Body>
void parallel_tiles(std::size_t count, int threads, const std::function<bool()>& should_stop,
                    Body&& body) {
    std::atomic<bool> stop{false};
    std::exception_ptr failure;
    auto last_poll = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(dynamic)
        for (std::ptrdiff_t t = 0; t < std::ptrdiff_t(count); ++t) {
            if (stop.load(std::memory_order_relaxed)) continue;
            try {
                body(std::size_t(t));
            } catch (...) {
#pragma omp critical(ntkcore_failure)
                if (!failure) failure = std::current_exception();
                stop.store(true);
            }
#ifdef _OPENMP
            const bool caller = omp_get_thread_num() == 0;
#else
            const bool caller = true;
#endif
            if (caller && should_stop) {
                const auto now = std::chrono::steady_clock::now();
                if (now - last_poll > std::chrono::milliseconds(50)) {
                    last_poll = now;
                    if (should_stop()) stop.store(true);
                }
            }
        }
    }
    if (failure) std::rethrow_exception(failure);
    if (stop.load()) throw Interrupted();
}

}  // namespace detail

}  // namespace ntkcore
