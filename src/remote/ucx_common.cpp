#include "remote/ucx_common.hpp"

#include <fmt/format.h>

#include <cstdlib>

#include "xlshare/error.hpp"

#include <ucs/config/global_opts.h>

namespace xlshare::ucx_detail {

std::string status_text(ucs_status_t status) {
  return fmt::format("UCX: {}", ucs_status_string(status));
}

ucp_config_t* read_config(const std::string& who) {
  ucp_config_t* config = nullptr;
  if (const ucs_status_t s = ucp_config_read(nullptr, nullptr, &config); s != UCS_OK) {
    throw BackendError(fmt::format("{}: cannot read UCX's configuration: {}", who, status_text(s)));
  }
  // xlshare reports every UCX failure in its own one-line errors; UCX's own log lines (on
  // stdout) only when asked for with UCX_LOG_LEVEL.
  if (std::getenv("UCX_LOG_LEVEL") == nullptr)
    (void)ucs_global_opts_set_value("LOG_LEVEL", "fatal");
  if (std::getenv("UCX_MM_ERROR_HANDLING") == nullptr) {
    (void)ucp_config_modify(config, "MM_ERROR_HANDLING", "y");  // unknown to old UCX: no harm
  }
  return config;
}

ucs_status_t wait_request(ucp_worker_h worker, ucs_status_ptr_t request, Clock::time_point deadline,
                          const bool* broken) {
  if (request == nullptr) return UCS_OK;
  if (UCS_PTR_IS_ERR(request)) return UCS_PTR_STATUS(request);
  for (unsigned spins = 0;; ++spins) {
    ucp_worker_progress(worker);
    const ucs_status_t status = ucp_request_check_status(request);
    if (status != UCS_INPROGRESS) {
      ucp_request_free(request);
      return status;
    }
    if ((spins & 255) == 0) {
      if (broken != nullptr && *broken) {
        ucp_request_free(request);  // completes (with an error) when the endpoint closes
        return UCS_ERR_CONNECTION_RESET;
      }
      if (Clock::now() > deadline) {
        ucp_request_free(request);
        return UCS_ERR_TIMED_OUT;
      }
    }
  }
}

}  // namespace xlshare::ucx_detail
