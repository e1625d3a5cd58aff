// WorkerGroup: processes started, messaged, measured and stopped, and every way a worker
// can fail reported with its index and its reason. (Serving groups sharing one copy of a
// model: EngineFiles.FourProcessesShareOneCopyAndAgree.)
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <thread>

#include "xlshare/engine/worker_group.hpp"
#include "xlshare/error.hpp"

namespace xlshare {
namespace {

// Echoes its messages with its index; "throw" throws, "exit N" ends the process with N.
class Echo final : public ProcessWorker {
 public:
  explicit Echo(unsigned index, bool hang_on_exit = false)
      : index_(index), hang_on_exit_(hang_on_exit) {}
  ~Echo() override {
    while (hang_on_exit_) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  std::string ready_report() override { return "ready " + std::to_string(index_); }
  std::string handle(std::string_view message) override {
    if (message == "throw") throw ConfigError("asked to throw");
    if (message.substr(0, 5) == "exit ") ::_exit(std::stoi(std::string(message.substr(5))));
    return std::to_string(index_) + ":" + std::string(message);
  }

 private:
  unsigned index_;
  bool hang_on_exit_;
};

// No child of this process is left, running or unreaped.
bool no_children_left() { return ::waitpid(-1, nullptr, WNOHANG) < 0 && errno == ECHILD; }

TEST(WorkerGroup, StartsWorkersThatAnswerInOrderAndStopCleanly) {
  WorkerGroup group([](unsigned i) { return std::make_unique<Echo>(i); }, {.workers = 3});
  ASSERT_EQ(group.size(), 3u);
  for (unsigned i = 0; i < 3; ++i) {
    EXPECT_EQ(group.ready_report(i), "ready " + std::to_string(i));
    EXPECT_NE(group.pid(i), ::getpid());
    EXPECT_GT(group.memory(i).rss, 0u);
    EXPECT_GT(group.open_fds(i), 0u);
  }
  // Several messages in flight to one worker come back in order.
  for (const char* m : {"a", "b", "c"}) group.send(1, m);
  EXPECT_EQ(group.receive(1), "1:a");
  EXPECT_EQ(group.receive(1), "1:b");
  EXPECT_EQ(group.receive(1), "1:c");
  EXPECT_EQ(group.call(2, std::string(3 << 20, 'x')).size(), (3u << 20) + 2);  // large frames
  EXPECT_TRUE(group.stop().empty());
  EXPECT_TRUE(group.stop().empty());  // idempotent
  EXPECT_THROW(group.call(0, "late"), WorkerError);
  EXPECT_TRUE(no_children_left());
}

TEST(WorkerGroup, TwoGroupsAliveAtOnceStopEachOnItsOwn) {
  // A worker of the second group must not hold the first group's sockets open: the first
  // group's workers would never see their end and would be killed after stop_timeout.
  const auto make = [](unsigned i) { return std::make_unique<Echo>(i); };
  WorkerGroup first(make, {.workers = 2, .stop_timeout = std::chrono::seconds(5)});
  WorkerGroup second(make, {.workers = 2, .stop_timeout = std::chrono::seconds(5)});
  EXPECT_EQ(second.call(1, "x"), "1:x");
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(first.stop().empty());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));  // none killed
  EXPECT_EQ(second.call(0, "y"), "0:y");
  EXPECT_TRUE(second.stop().empty());
}

TEST(WorkerGroup, AnExceptionInHandleFailsThatMessageOnly) {
  WorkerGroup group([](unsigned i) { return std::make_unique<Echo>(i); }, {.workers = 1});
  try {
    group.call(0, "throw");
    FAIL() << "no exception";
  } catch (const WorkerError& e) {
    EXPECT_EQ(e.worker(), 0u);
    EXPECT_NE(std::string(e.what()).find("asked to throw"), std::string::npos) << e.what();
  }
  EXPECT_EQ(group.call(0, "still here"), "0:still here");
  EXPECT_TRUE(group.stop().empty());
}

TEST(WorkerGroup, AWorkerThatDiesIsReportedWithHowItEnded) {
  WorkerGroup group([](unsigned i) { return std::make_unique<Echo>(i); }, {.workers = 2});
  try {
    group.call(1, "exit 3");
    FAIL() << "no exception";
  } catch (const WorkerError& e) {
    EXPECT_EQ(e.worker(), 1u);
    EXPECT_NE(std::string(e.what()).find("exited with status 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(group.send(1, "again"), WorkerError);
  EXPECT_EQ(group.call(0, "ok"), "0:ok");  // the others serve on
  const auto lines = group.stop();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("worker 1"), std::string::npos) << lines[0];
  EXPECT_TRUE(no_children_left());
}

TEST(WorkerGroup, AWorkerThatFailsToStartIsNamedAndNoneIsLeft) {
  try {
    WorkerGroup group(
        [](unsigned i) -> std::unique_ptr<ProcessWorker> {
          if (i == 2) throw PoolError("no such model 'x'");
          return std::make_unique<Echo>(i);
        },
        {.workers = 3});
    FAIL() << "no exception";
  } catch (const WorkerError& e) {
    EXPECT_EQ(e.worker(), 2u);
    EXPECT_NE(std::string(e.what()).find("no such model 'x'"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(no_children_left());
  EXPECT_THROW(WorkerGroup([](unsigned i) { return std::make_unique<Echo>(i); }, {.workers = 0}),
               ConfigError);
  EXPECT_THROW(WorkerGroup([](unsigned i) { return std::make_unique<Echo>(i); }, {.workers = 257}),
               ConfigError);
}

TEST(WorkerGroup, AWorkerThatDoesNotStopIsKilledAndSaidSo) {
  WorkerGroup group([](unsigned i) { return std::make_unique<Echo>(i, i == 0); },
                    {.workers = 2, .stop_timeout = std::chrono::milliseconds(200)});
  const auto lines = group.stop();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("worker 0"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("killed"), std::string::npos) << lines[0];
  EXPECT_TRUE(no_children_left());
}

TEST(WorkerGroup, TheDestructorStopsTheWorkersOnAnyExitPath) {
  std::vector<pid_t> pids;
  try {
    WorkerGroup group([](unsigned i) { return std::make_unique<Echo>(i); }, {.workers = 2});
    pids = {group.pid(0), group.pid(1)};
    throw std::runtime_error("the caller fails");
  } catch (const std::runtime_error&) {
  }
  for (pid_t p : pids) EXPECT_NE(::kill(p, 0), 0) << "pid " << p << " still exists";
  EXPECT_TRUE(no_children_left());
}

}  // namespace
}  // namespace xlshare
