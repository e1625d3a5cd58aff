// `xlshare worker`: any program drives an engine through a pipe. Requests are read line by
// line and submitted as they come (the scheduler batches them with whatever runs); results
// go out in the order of the requests, each as soon as it and those before it are done,
// and with --stream every token as it is generated.
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <fstream>
#include <iostream>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "xlshare/error.hpp"

namespace xlshare::cli {
namespace {

struct Entry {
  RequestLine line;
  RequestHandle handle;  // empty: line.error says why it was not submitted
};

nlohmann::json result_line(const InferenceResult& res, std::size_t line) {
  return {{"id", res.id},
          {"line", line},
          {"tokens", res.output_tokens},
          {"finish_reason", to_string(res.finish_reason)},
          {"latency_ms", res.latency_ms},
          {"queue_ms", res.queue_ms},
          {"ttft_ms", res.ttft_ms},
          {"tpot_ms", res.tpot_ms},
          {"ready_rate", res.ready_rate},
          {"reuse_rate", res.reuse_rate},
          {"stall_ms", res.stall_ms},
          {"link_bytes", res.link_bytes},
          {"pid", ::getpid()}};
}

}  // namespace

void run_worker(const EngineConfig& config, const std::string& model, const std::string& requests,
                const std::string& out_path, bool stream) {
  std::ifstream in_file;
  std::istream* in = &std::cin;
  if (requests != "-") {
    in_file.open(requests);
    if (!in_file) throw ConfigError(fmt::format("{}: cannot open the requests file", requests));
    in = &in_file;
  }
  std::ofstream out_file;
  std::ostream* out = &std::cout;
  if (out_path != "-") {
    out_file.open(out_path, std::ios::trunc);
    if (!out_file) throw BackendError(fmt::format("{}: cannot create", out_path));
    out = &out_file;
  }
  std::mutex out_mu;  // token events (scheduler threads) and results (the writer)
  const auto write = [&](const nlohmann::json& j) {
    std::lock_guard g(out_mu);
    // Request text may hold bytes that are not UTF-8 (quoted in a parse error): replaced.
    *out << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    out->flush();  // a reader at the other end of a pipe sees each line at once
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Entry> pending;
  bool input_done = false;
  std::exception_ptr fatal;
  std::string fatal_what;
  std::size_t served = 0, failed = 0;
  // Declared after what its callbacks use: destroyed (its threads stopped) before them.
  InferenceEngine engine(config);
  engine.attach_model(model);

  // Results in the order of the requests, each written as soon as it is done. After a
  // failure of the pool, the link or the cache, every later request is answered with an
  // error line (and cancelled) until the input ends.
  std::thread writer([&] {
    for (;;) {
      Entry e;
      {
        std::unique_lock l(mu);
        cv.wait(l, [&] { return !pending.empty() || input_done; });
        if (pending.empty()) return;
        e = std::move(pending.front());
        pending.pop_front();
      }
      const auto error_line = [&](const std::string& why) {
        write({{"id", e.line.request.id},
               {"line", e.line.line},
               {"error", why},
               {"pid", ::getpid()}});
        ++failed;
      };
      try {
        if (!e.handle) {
          error_line(e.line.error);
        } else if (fatal) {
          e.handle.cancel();
          error_line("not served: the worker failed: " + fatal_what);
        } else {
          try {
            const InferenceResult res = e.handle.wait();
            write(result_line(res, e.line.line));
            ++served;
          } catch (const ConfigError& x) {
            error_line(x.what());  // this request was impossible; the next may not be
          } catch (const std::exception& x) {
            // The pool, the link or the cache failed: later requests would fail the same way.
            error_line(x.what());
            std::lock_guard l(mu);
            fatal = std::current_exception();
            fatal_what = x.what();
          }
        }
      } catch (...) {  // writing failed: the output is gone; answer nothing more
        std::lock_guard l(mu);
        if (!fatal) fatal = std::current_exception();
        fatal_what = "the output failed";
      }
    }
  });
  const auto finish_writer = [&] {
    {
      std::lock_guard l(mu);
      input_done = true;
    }
    cv.notify_one();
    if (writer.joinable()) writer.join();
  };

  try {
    std::string text;
    std::size_t number = 0;
    while (std::getline(*in, text)) {
      ++number;
      if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
      Entry e;
      e.line = parse_request_line(text, number);
      bool failed_already;
      {
        std::lock_guard l(mu);
        failed_already = fatal != nullptr;
      }
      if (e.line.error.empty() && !failed_already) {
        RequestCallbacks callbacks;
        if (stream) {
          callbacks.on_token = [&write, line = number](const TokenEvent& ev) {
            if (ev.token < 0) return;
            write({{"event", "token"},
                   {"id", ev.id},
                   {"line", line},
                   {"token", ev.token},
                   {"position", ev.position}});
          };
        }
        try {
          e.handle = engine.submit(e.line.request, std::move(callbacks));
        } catch (const ConfigError& x) {  // too long, a token outside the vocabulary, ...
          e.line.error = x.what();
        }
      } else if (failed_already && e.line.error.empty()) {
        e.line.error = "not served: the worker failed earlier";
      }
      {
        std::lock_guard l(mu);
        pending.push_back(std::move(e));
      }
      cv.notify_one();
    }
  } catch (...) {
    finish_writer();
    throw;
  }
  const bool read_failed = in->bad();
  finish_writer();
  if (fatal) std::rethrow_exception(fatal);
  if (read_failed) throw BackendError(fmt::format("{}: read failed", requests));
  out->flush();
  if (!*out) throw BackendError(fmt::format("{}: write failed", out_path));
  if (failed > 0) {
    throw ConfigError(fmt::format("worker {}: {} of {} requests failed ({} served; errors in {})",
                                  ::getpid(), failed, served + failed, served,
                                  out_path == "-" ? "the output" : out_path));
  }
  fmt::print(stderr, "worker {}: {} requests served\n", ::getpid(), served);
}

}  // namespace xlshare::cli
