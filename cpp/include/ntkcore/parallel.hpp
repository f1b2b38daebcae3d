// Threads for the core: a dynamically scheduled loop that transports exceptions and
// polls an interruption callback (the Gram driver, operators and series tables use it), and
// the signal through which long loops inside one work item poll that callback too.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <stdexcept>
#include <thread>
#include <utility>

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

}  // namespace detail

// An interruption request shared by the threads of one computation.  poll() calls
// should_stop only on the thread that created the signal (Python's signal check must run
// there) and at most every 50 ms, so that long loops may call it often; other threads
// see the answer, or a stop requested because one of them failed.
class StopSignal {
public:
    explicit StopSignal(std::function<bool()> should_stop = {})
        : should_stop_(std::move(should_stop)), owner_(std::this_thread::get_id()),
          last_poll_(std::chrono::steady_clock::now()) {}

    void request() { stop_.store(true, std::memory_order_relaxed); }
    bool requested() const { return stop_.load(std::memory_order_relaxed); }

    bool poll() {
        if (should_stop_ && !requested() && std::this_thread::get_id() == owner_) {
            const auto now = std::chrono::steady_clock::now();
            if (now - last_poll_ > std::chrono::milliseconds(50)) {
                last_poll_ = now;
                if (should_stop_()) request();
            }
        }
        return requested();
    }

    // For loops inside one work item: ends it by Interrupted once a stop was requested.
    void check() {
        if (poll()) throw Interrupted();
    }

private:
    std::function<bool()> should_stop_;
    std::thread::id owner_;
    std::chrono::steady_clock::time_point last_poll_;
    std::atomic<bool> stop_{false};
};

namespace detail {

// Runs body(t) for t in [0, count) on `threads` threads, dynamically scheduled.  The calling
// thread polls `stop` between items (bodies may poll it too); a stop request or an exception
// in any body ends the loop, and then Interrupted or that exception is thrown here.
template <class Body>
void parallel_tiles(std::size_t count, int threads, StopSignal& stop, Body&& body) {
    std::exception_ptr failure;
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(dynamic)
        for (std::ptrdiff_t t = 0; t < std::ptrdiff_t(count); ++t) {
            if (stop.poll()) continue;
            try {
                body(std::size_t(t));
            } catch (...) {
#pragma omp critical(ntkcore_failure)
                if (!failure) failure = std::current_exception();
                stop.request();
            }
        }
    }
    if (failure) std::rethrow_exception(failure);
    if (stop.requested()) throw Interrupted();
}

template <class Body>
void parallel_tiles(std::size_t count, int threads, const std::function<bool()>& should_stop, Body&& body) {
    StopSignal stop(should_stop);
    parallel_tiles(count, threads, stop, std::forward<Body>(body));
}

}  // namespace detail

}  // namespace ntkcore
