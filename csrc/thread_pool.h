// A persistent pool of worker threads for splitting one forward call across cores, and the
// spinning phase synchronisation its members use between time steps (steps last microseconds: a
// futex would cost more than the step).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace fastlstm {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spin while the wait is likely short; then yield, so a descheduled partner on a busy (shared)
// machine gets a core back instead of us burning it.
template <typename Done>
void spin_until(Done done) {
  for (int i = 0; !done(); ++i) {
    if (i < 4096) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

// Splits each phase of a team's work (one time step's gates, say) into one chunk per member:
// every member does its own chunk first (so its slice of the weights stays in its cache), then
// any chunk nobody has claimed yet, then waits until all chunks of the phase are done. A member
// the OS has descheduled thus delays the others by at most the chunk it is inside, not by the
// rest of the call, which a plain barrier would.
//
// A member can still be descheduled while inside a chunk it claimed (a busy machine, another
// library's threads spinning on its core), and the others must wait for that chunk. When the caller
// (rank 0) has waited longer than its own work in the phase, and at least kPreemptedWait, it goes
// solo: from then on the other members claim nothing, and the caller runs the rest alone.
class PhaseSync {
 public:
  static constexpr std::chrono::nanoseconds kPreemptedWait{std::chrono::microseconds(200)};

  PhaseSync() = default;
  PhaseSync(const PhaseSync&) = delete;
  PhaseSync& operator=(const PhaseSync&) = delete;

  // Only while no member runs. The claims grow to the largest team seen and are then reused, so a
  // steady stream of calls allocates nothing.
  void reset(int chunks) {
    if (chunks > capacity_) {
      claims_.reset(new Claim[chunks]);
      capacity_ = chunks;
    }
    chunks_ = chunks;
    for (int i = 0; i < chunks_; ++i) claims_[i].phase.store(0, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    solo_.store(false, std::memory_order_relaxed);
  }

  // True once the caller decided to finish the call alone.
  bool solo() const { return solo_.load(std::memory_order_relaxed); }

  // `phase` counts the phases this member has run (the same sequence on every member).
  template <typename Work>
  void run_phase(int rank, uint64_t& phase, Work&& work) {
    const uint64_t current = ++phase;
    if (rank != 0 && solo_.load(std::memory_order_relaxed)) return;  // every chunk is the caller's now
    const auto start = rank == 0 ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
    for (int i = 0; i < chunks_; ++i) {
      const int chunk = (rank + i) % chunks_;
      uint64_t expected = current - 1;
      if (claims_[chunk].phase.load(std::memory_order_relaxed) != expected ||
          !claims_[chunk].phase.compare_exchange_strong(expected, current, std::memory_order_acq_rel))
        continue;
      work(chunk);
      done_.fetch_add(1, std::memory_order_acq_rel);
    }
    const uint64_t target = current * static_cast<uint64_t>(chunks_);
    auto finished = [&] { return done_.load(std::memory_order_acquire) >= target; };
    if (rank != 0 || finished()) return spin_until(finished);
    const auto worked = std::chrono::steady_clock::now();
    spin_until(finished);
    const auto waited = std::chrono::steady_clock::now() - worked;
    if (waited > kPreemptedWait && waited > worked - start) solo_.store(true, std::memory_order_relaxed);
  }

 private:
  struct alignas(64) Claim {
    std::atomic<uint64_t> phase{0};  // the last phase this chunk was claimed for
  };
  int chunks_ = 1;
  int capacity_ = 0;
  std::unique_ptr<Claim[]> claims_;  // one per chunk, each on its own cache line
  alignas(64) std::atomic<uint64_t> done_{0};  // chunks completed over all phases
  std::atomic<bool> solo_{false};
};

class ThreadPool {
 public:
  static ThreadPool& instance();

  // The most threads one call may use, the caller's included: far above today's largest servers,
  // low enough that a typo (2**31) is an error rather than an attempt to start that many threads.
  static constexpr int kMaxThreads = 1024;

  // Threads one call may use, the caller's included. Default: the CPUs this process may run on
  // (at most kMaxThreads).
  int num_threads() const { return num_threads_.load(std::memory_order_relaxed); }
  void set_num_threads(int n);  // clamped to [1, kMaxThreads]; callers validate first

  // Runs job(member) on the caller (member 0) and on up to max_members - 1 workers, each joining
  // whenever it gets a core, until the caller has finished; returns when every member has. A job
  // must therefore be correct with any subset of members, its work shared through PhaseSync
  // claims: a worker that is descheduled (a busy, shared machine) or held by another call
  // (concurrent callers run alone) never makes the caller wait, and cores are never oversubscribed.
  // Returns false if a helper was descheduled before it could leave (the caller waited for it).
  bool run(int max_members, const std::function<void(int)>& job);

  // Contention back-off. After a team call found a helper descheduled (PhaseSync went solo, or
  // run() returned false), calls run on the calling thread alone for a while: the cores are busy
  // with other work (another process, another library's spinning threads) and a team would keep
  // waiting for them. The window starts short, so a rare hiccup costs little, and doubles each time
  // the first team call after it is contended again, so lasting contention is soon avoided
  // entirely; a clean team call resets it.
  static constexpr std::chrono::milliseconds kMinBackOff{2}, kMaxBackOff{200};
  void report_team_call(bool contended);
  bool backing_off() const;

 private:
  explicit ThreadPool(int num_threads);
  void ensure_workers(int count);
  void worker_loop(int index);

  std::atomic<int> num_threads_;
  std::mutex busy_;  // held by the call using the workers
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> generation_{0};
  // [generation:32][closed:1][joined:31]: workers join the current generation's team by CAS.
  std::atomic<uint64_t> join_{0};
  std::atomic<int> done_{0};
  const std::function<void(int)>* job_ = nullptr;
  int max_members_ = 0;
  std::atomic<int64_t> back_off_until_ns_{0};  // steady_clock time
  std::atomic<int64_t> back_off_window_ns_{0};  // the last window; 0 after a clean team call
};

}  // namespace fastlstm
