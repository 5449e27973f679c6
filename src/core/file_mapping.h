#pragma once
// Read-only memory mapping of a whole file, and atomic whole-file writes. Engines are mapped so
// that their weight blobs are used in place; model dumps and engines are written atomically so a
// failed or interrupted write never leaves a partial file where a good one is expected.
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/status.h"

namespace kiln {

class FileMapping {
 public:
  // Maps `path` read-only. An empty file maps to an empty span. Errors name the file.
  static Result<std::shared_ptr<FileMapping>> open(const std::string& path);
  ~FileMapping();
  FileMapping(const FileMapping&) = delete;
  FileMapping& operator=(const FileMapping&) = delete;

  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  FileMapping() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Writes `bytes` to a temporary file next to `path`, flushes it to disk and renames it over
// `path`. On any error the temporary file is removed and `path` is left as it was.
Status write_file_atomically(const std::string& path, std::span<const uint8_t> bytes);

}  // namespace kiln
