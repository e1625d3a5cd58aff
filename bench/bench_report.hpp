// What every bench binary shares: the statistics of repeated runs (median, percentiles) and
// its output, markdown tables for docs/results.md by default or, with --json, one JSON
// document on stdout holding the same tables (numbers unrounded) and the notes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace xlshare::bench {

/// The median of `v` (the upper one of an even count); 0 when empty.
template <typename T>
T median(std::vector<T> v) {
  if (v.empty()) return T{};
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

/// The nearest-rank percentile `p` (0..100) of `v`; 0 when empty.
inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  const double rank = std::ceil(p / 100.0 * static_cast<double>(v.size()));
  const auto i = static_cast<std::size_t>(std::clamp(rank, 1.0, static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i - 1), v.end());
  return v[i - 1];
}

/// One cell: its value for JSON and its text for markdown.
struct Cell {
  nlohmann::json value;
  std::string text;
};
inline Cell cell(double v, int decimals) { return {v, fmt::format("{:.{}f}", v, decimals)}; }
inline Cell cell(std::string text) { return {text, text}; }
inline Cell cell(const char* text) { return cell(std::string(text)); }
template <typename Int, typename = std::enable_if_t<std::is_integral_v<Int>>>
Cell cell(Int v) {
  return {v, fmt::format("{}", v)};
}
/// A figure that was not measured ("—" in markdown, null in JSON).
inline Cell missing() { return {nullptr, "—"}; }

class Report {
 public:
  explicit Report(bool json) : json_(json) {}
  Report(const Report&) = delete;
  Report& operator=(const Report&) = delete;
  /// Prints the JSON document (with --json); markdown went out as it came.
  ~Report() {
    if (json_) {
      fmt::print("{}\n", doc_.dump(2));
    } else {
      end_table();
    }
  }

  bool json() const noexcept { return json_; }
  /// Prose: a heading or what was measured how.
  void note(const std::string& text) {
    end_table();
    if (json_) {
      doc_["notes"].push_back(text);
    } else {
      fmt::print("{}\n\n", text);
    }
  }
  /// Starts table `name` with these columns.
  void table(const std::string& name, std::vector<std::string> columns) {
    end_table();
    name_ = name;
    columns_ = std::move(columns);
    if (json_) {
      doc_["tables"][name_] = nlohmann::json::array();
      return;
    }
    std::string head = "|", rule = "|";
    for (const auto& c : columns_) {
      head += " " + c + " |";
      rule += "---|";
    }
    fmt::print("{}\n{}\n", head, rule);
  }
  /// One row of the current table, a cell per column.
  void row(const std::vector<Cell>& cells) {
    if (json_) {
      nlohmann::json r;
      for (std::size_t i = 0; i < cells.size() && i < columns_.size(); ++i) {
        r[columns_[i]] = cells[i].value;
      }
      doc_["tables"][name_].push_back(std::move(r));
      return;
    }
    std::string line = "|";
    for (const auto& c : cells) line += " " + c.text + " |";
    fmt::print("{}\n", line);
    open_ = true;
  }
  /// Any other figure, by name (JSON only; markdown shows it in a note or table).
  void set(const std::string& key, nlohmann::json value) { doc_[key] = std::move(value); }

 private:
  void end_table() {
    if (open_ && !json_) fmt::print("\n");
    open_ = false;
  }

  bool json_;
  nlohmann::json doc_ = nlohmann::json::object();
  std::string name_;
  std::vector<std::string> columns_;
  bool open_ = false;
};

}  // namespace xlshare::bench
