// Loading a model file into a pool, once, for every worker to share.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "xlshare/memory/pool.hpp"
#include "xlshare/model/executor.hpp"
#include "xlshare/model/model_file.hpp"
#include "xlshare/model/tokenizer.hpp"

namespace xlshare {

/// Called after each tensor: bytes copied so far, bytes in all, the tensor just copied.
using LoadProgress = std::function<void(std::uint64_t done_bytes, std::uint64_t total_bytes,
                                        const std::string& tensor)>;

/// Streams every tensor of `file` into a new model `name` of `pool` (tensor by tensor,
/// straight into pool extents: the file is never held in memory whole), records the
/// config in the model's metadata and seals it. On any error the half-written model is
/// abandoned (its extents freed). @throws FormatError, PoolError, OutOfMemory.
std::shared_ptr<const ModelView> load_model_into_pool(const ModelFile& file, Pool& pool,
                                                      std::string_view name,
                                                      const LoadProgress& progress = {});

/// The metadata a loaded model carries: its config (which LlamaModel::from_pool reads back),
/// its schedule as steps of tensor names, where it came from, and its tokenizer when it has
/// one ("tokenizer": serialize_tokenizer()'s bytes in base64, since tokens are bytes that
/// JSON text cannot always hold; the pool checksums the whole blob like its catalog).
std::string model_metadata(const LlamaModel& model, std::string_view source,
                           std::string_view source_format,
                           const TokenizerData* tokenizer = nullptr);

/// The tokenizer a pool's model carries, validated against its config exactly as the GGUF
/// reader validates a file's (std::nullopt: it has none).
/// @throws FormatError naming the model and the problem.
std::optional<TokenizerData> pool_tokenizer(const ModelView& view);

/// The pool's read-only mapping of each tensor of `view`, in its table order: weights for
/// an Executor that reads the pool directly (no cache, no link emulation). Every tensor is
/// verified against its catalog checksum first (one pass over the model's bytes: a one-shot
/// reader's "first use"; long-lived readers use a VerifiedMapping and its Scrubber).
/// @throws PoolError naming the pool, the model and the first tensor that does not match.
SpanWeights pool_weights(const Pool& pool, const ModelView& view);

/// Proves that `replica_view` in `replica` is the same model as `view` in `primary`: the
/// same tensors in the same order with the same names, dtypes, shapes, sizes and catalog
/// checksums. @throws PoolError ("replica pool X holds a different model 'm': tensor 't'
/// differs in its shape ...").
void check_same_model(const Pool& primary, const ModelView& view, const Pool& replica,
                      const ModelView& replica_view);

}  // namespace xlshare
