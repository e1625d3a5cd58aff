#include "xlshare/proc_memory.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace xlshare {
namespace {

// "Pss:    123 kB" -> adds 123*1024 to the matching field.
void accumulate(const std::string& line, ProcMemory& m) {
  struct Field {
    const char* key;
    std::uint64_t ProcMemory::*member;
  };
  static constexpr Field kFields[] = {
      {"Rss:", &ProcMemory::rss},
      {"Pss:", &ProcMemory::pss},
      {"Pss_Shmem:", &ProcMemory::pss_shmem},
      {"Shared_Clean:", &ProcMemory::shared_clean},
      {"Shared_Dirty:", &ProcMemory::shared_dirty},
      {"Private_Clean:", &ProcMemory::private_clean},
      {"Private_Dirty:", &ProcMemory::private_dirty},
  };
  for (const auto& f : kFields) {
    const std::size_t n = std::strlen(f.key);
    if (line.compare(0, n, f.key) == 0) {
      unsigned long long kb = 0;
      if (std::sscanf(line.c_str() + n, "%llu", &kb) == 1) m.*(f.member) += kb * 1024;
      return;
    }
  }
}

bool is_mapping_header(const std::string& line) {
  // "7f12c0000000-7f12c4000000 r--s 00000000 00:01 1234   /dev/shm/name"
  const auto dash = line.find('-');
  if (dash == std::string::npos || dash == 0) return false;
  for (std::size_t i = 0; i < dash; ++i) {
    if (!std::isxdigit(static_cast<unsigned char>(line[i]))) return false;
  }
  return true;
}

}  // namespace

std::optional<ProcMemory> read_proc_memory(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/smaps_rollup", pid));
  if (!in) return std::nullopt;
  ProcMemory m;
  std::string line;
  bool any = false;
  while (std::getline(in, line)) {
    accumulate(line, m);
    any = true;
  }
  if (!any) return std::nullopt;
  return m;
}

std::optional<ProcMemory> read_mapping_memory(pid_t pid, std::string_view path_fragment) {
  std::ifstream in(fmt::format("/proc/{}/smaps", pid));
  if (!in) return std::nullopt;
  ProcMemory m;
  std::string line;
  bool selected = false;
  while (std::getline(in, line)) {
    if (is_mapping_header(line)) {
      selected = line.find(path_fragment) != std::string::npos;
      continue;
    }
    if (selected) accumulate(line, m);
  }
  return m;
}

}  // namespace xlshare
