#include "xlshare/model/model_loader.hpp"

#include <nlohmann/json.hpp>

#include "xlshare/error.hpp"

namespace xlshare {

std::shared_ptr<const ModelView> load_model_into_pool(const ModelFile& file, Pool& pool, std::string_view name,
                                                      const LoadProgress& progress) {
  ModelWriter writer = pool.begin_model(name);  // abandoned by its destructor on any throw
  const std::uint64_t total = file.total_bytes();
  std::uint64_t done = 0;
  for (const FileTensor& t : file.tensors) {
    auto dst = writer.add_tensor(t.name, t.dtype, std::span(t.shape.data(), t.n_dims));
    read_tensor_data(t, dst);
    done += t.size_bytes;
    if (progress) progress(done, total, t.name);
  }
  writer.set_metadata(model_metadata(LlamaModel::from_file(file), file.path.string(),
                                     file.format == ModelFormat::kGguf ? "gguf" : "safetensors"));
  writer.seal();
  return pool.model(name);
}

std::string model_metadata(const LlamaModel& model, std::string_view source, std::string_view source_format) {
  nlohmann::json schedule = nlohmann::json::array();
  for (const auto& step : model.schedule().steps()) {
    nlohmann::json names = nlohmann::json::array();
    for (auto k : step.keys) names.push_back(model.tensors()[k].name);
    schedule.push_back({{"step", step.name}, {"tensors", names}});
  }
  return nlohmann::json{{"format", "xlshare-llama/1"},
                        {"config", nlohmann::json::parse(model.config().to_json())},
                        {"schedule", schedule},
                        {"source", source},
                        {"source_format", source_format}}
      .dump();
}

SpanWeights pool_weights(const Pool& pool, const ModelView& view) {
  std::vector<std::span<const std::byte>> spans;
  for (const auto& t : view.tensors()) {
    auto s = pool.view(t);
    if (s.size() != t.size_bytes) throw PoolError("pool_weights: a tensor lies outside the pool mapping");
    spans.push_back(s);
  }
  return SpanWeights(std::move(spans));
}

}  // namespace xlshare
