#include "thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <chrono>

namespace fastlstm {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spin while the wait is likely short; then yield, so a descheduled partner on a busy (shared)
// machine gets the core back instead of us burning it.
template <typename Done>
void spin_until(Done done) {
  for (int i = 0; !done(); ++i) {
    if (i < 4096) {
      cpu_relax();
    } else {
      sched_yield();
    }
  }
}

int available_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

void SpinBarrier::arrive_and_wait() {
  if (members_ <= 1) return;
  const uint64_t generation = generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) == members_ - 1) {
    arrived_.store(0, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    return;
  }
  spin_until([&] { return generation_.load(std::memory_order_acquire) != generation; });
}

ThreadPool& ThreadPool::instance() {
  static ThreadPool* pool = new ThreadPool();  // never destroyed: workers may outlive static teardown
  return *pool;
}

ThreadPool::ThreadPool() : num_threads_(available_cpus()) {}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void ThreadPool::set_num_threads(int n) { num_threads_.store(std::max(1, n), std::memory_order_relaxed); }

void ThreadPool::ensure_workers(int count) {
  while (static_cast<int>(workers_.size()) < count) {
    const int index = static_cast<int>(workers_.size());
    workers_.emplace_back([this, index] { worker_loop(index); });
  }
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    // Back-to-back calls (a stream of steps) find the worker still spinning; idle workers sleep.
    const auto spin_deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
    while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spin_deadline)
      cpu_relax();
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_.load(std::memory_order_acquire) != seen; });
      if (stop_) return;
    }
    seen = generation_.load(std::memory_order_acquire);
    if (index + 1 < members_) {
      (*job_)(index + 1);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
}

bool ThreadPool::try_run(int members, const std::function<void(int)>& job) {
  std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
  if (!busy.owns_lock()) return false;
  ensure_workers(members - 1);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &job;
    members_ = members;
    pending_.store(members - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  job(0);
  spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; });
  return true;
}

}  // namespace fastlstm
