// A persistent pool of worker threads for splitting one forward call across cores, and the spin
// barrier its members meet at between time steps (steps last microseconds: a futex would cost more
// than the step).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace fastlstm {

class SpinBarrier {
 public:
  explicit SpinBarrier(int members) : members_(members) {}
  void arrive_and_wait();

 private:
  const int members_;
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<uint64_t> generation_{0};
};

class ThreadPool {
 public:
  static ThreadPool& instance();
  ~ThreadPool();

  // Threads one call may use, the caller's included. Default: the CPUs this process may run on.
  int num_threads() const { return num_threads_.load(std::memory_order_relaxed); }
  void set_num_threads(int n);

  // Runs job(member) for members 0..members-1, member 0 on the calling thread, and returns when
  // all are done. Returns false without running anything when another call holds the pool, so
  // concurrent callers fall back to one thread each instead of oversubscribing the cores.
  bool try_run(int members, const std::function<void(int)>& job);

 private:
  ThreadPool();
  void ensure_workers(int count);
  void worker_loop(int index);

  std::atomic<int> num_threads_;
  std::mutex busy_;  // held by the call using the workers
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
  std::atomic<uint64_t> generation_{0};
  const std::function<void(int)>* job_ = nullptr;
  int members_ = 0;
  std::atomic<int> pending_{0};
};

}  // namespace fastlstm
