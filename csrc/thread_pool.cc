#include "thread_pool.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <chrono>

namespace fastlstm {
namespace {

int available_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

std::atomic<ThreadPool*> g_pool{nullptr};

}  // namespace

ThreadPool& ThreadPool::instance() {
  // Never destroyed: its workers run until the process exits and must not see it torn down first.
  static std::once_flag created;
  std::call_once(created, [] {
    g_pool.store(new ThreadPool(available_cpus()), std::memory_order_release);
    // A forked child has none of the parent's workers, and inherits the pool's mutexes and condition
    // variable in whatever state the parent's threads left them (waking "waiters" that do not exist
    // hangs). The child, single-threaded at this point, gets a fresh pool with the same setting;
    // the old one is leaked on purpose (destroying its std::threads would terminate the process).
    pthread_atfork(nullptr, nullptr, [] {
      ThreadPool* inherited = g_pool.load(std::memory_order_relaxed);
      g_pool.store(new ThreadPool(inherited->num_threads()), std::memory_order_release);
    });
  });
  return *g_pool.load(std::memory_order_acquire);
}

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::clamp(num_threads, 1, kMaxThreads)) {}

void ThreadPool::set_num_threads(int n) { num_threads_.store(std::clamp(n, 1, kMaxThreads), std::memory_order_relaxed); }

void ThreadPool::ensure_workers(int count) {
  while (static_cast<int>(workers_.size()) < count) {
    const int index = static_cast<int>(workers_.size());
    workers_.emplace_back([this, index] { worker_loop(index); });
  }
}

namespace {

constexpr uint64_t kClosed = uint64_t(1) << 31;
constexpr uint64_t kJoinedMask = kClosed - 1;

}  // namespace

void ThreadPool::worker_loop(int /*index*/) {
  uint64_t seen = generation_.load(std::memory_order_acquire);
  bool helped = false;
  for (;;) {
    // A worker that just helped spins a while, so back-to-back calls find it awake; any other
    // sleeps at once. (Workers a call did not need must not spin: after one call with many
    // threads, every later call would wake them all to burn the cores its own team needs.)
    const auto spin_deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(helped ? 1000 : 0);
    while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spin_deadline)
      cpu_relax();
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
    }
    seen = generation_.load(std::memory_order_acquire);
    const uint64_t generation = seen & 0xffffffffu;

    int member = -1;
    uint64_t word = join_.load(std::memory_order_acquire);
    while ((word >> 32) == generation && !(word & kClosed) &&
           static_cast<int>(word & kJoinedMask) < max_members_ - 1) {
      if (join_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel)) {
        member = static_cast<int>(word & kJoinedMask) + 1;
        break;
      }
    }
    helped = member >= 0;
    if (!helped) continue;  // the call has finished, or has all the helpers it wants
    (*job_)(member);
    done_.fetch_add(1, std::memory_order_release);
  }
}

bool ThreadPool::run(int max_members, const std::function<void(int)>& job) {
  std::unique_lock<std::mutex> busy(busy_, std::defer_lock);
  if (max_members <= 1 || !busy.try_lock()) {
    job(0);  // the job's phases give every chunk to whoever claims it: here, the caller alone
    return true;
  }
  max_members = std::min(max_members, kMaxThreads);
  ensure_workers(max_members - 1);
  uint64_t generation;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generation = generation_.load(std::memory_order_relaxed) + 1;
    job_ = &job;
    max_members_ = max_members;
    done_.store(0, std::memory_order_relaxed);
    join_.store((generation & 0xffffffffu) << 32, std::memory_order_relaxed);
    generation_.store(generation, std::memory_order_release);
  }
  // As many sleepers as the call can use; workers still spinning from the last call join first.
  for (int i = 1; i < max_members; ++i) wake_.notify_one();
  // The caller starts at once; workers join whenever they get a core, up to the end of the call.
  job(0);
  const int joined = static_cast<int>(join_.fetch_or(kClosed, std::memory_order_acq_rel) & kJoinedMask);
  auto left = [&] { return done_.load(std::memory_order_acquire) == joined; };
  if (left()) return true;
  // Helpers leave right after the caller's last phase, unless descheduled.
  const auto start = std::chrono::steady_clock::now();
  spin_until(left);
  return std::chrono::steady_clock::now() - start <= PhaseSync::kPreemptedWait;
}

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void ThreadPool::report_team_call(bool contended) {
  if (!contended) {
    back_off_window_ns_.store(0, std::memory_order_relaxed);
    return;
  }
  const int64_t min = std::chrono::nanoseconds(kMinBackOff).count(), max = std::chrono::nanoseconds(kMaxBackOff).count();
  const int64_t window = std::clamp(2 * back_off_window_ns_.load(std::memory_order_relaxed), min, max);
  back_off_window_ns_.store(window, std::memory_order_relaxed);
  back_off_until_ns_.store(now_ns() + window, std::memory_order_relaxed);
}

bool ThreadPool::backing_off() const { return now_ns() < back_off_until_ns_.load(std::memory_order_relaxed); }

}  // namespace fastlstm
