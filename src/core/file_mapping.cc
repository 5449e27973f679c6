#include "core/file_mapping.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace kiln {

namespace {

std::string errno_text(int e) {
  return std::strerror(e);
}

// Closes a descriptor on every path out of a function.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

Result<std::shared_ptr<FileMapping>> FileMapping::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) return invalid("{}: no such file", path);
    return invalid("{}: cannot open the file: {}", path, errno_text(e));
  }
  FdCloser closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return invalid("{}: cannot read the file's size: {}", path, errno_text(errno));
  if (S_ISDIR(st.st_mode)) return invalid("{}: is a directory, not a file", path);
  if (!S_ISREG(st.st_mode)) return invalid("{}: not a regular file", path);
  std::shared_ptr<FileMapping> m(new FileMapping());
  m->path_ = path;
  m->size_ = static_cast<size_t>(st.st_size);
  if (m->size_ == 0) return m;
  void* p = ::mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) {
    m->size_ = 0;
    return invalid("{}: cannot map the file into memory: {}", path, errno_text(errno));
  }
  m->data_ = static_cast<const uint8_t*>(p);
  return m;
}

FileMapping::~FileMapping() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

Status write_file_atomically(const std::string& path, std::span<const uint8_t> bytes) {
  static std::atomic<uint64_t> counter{0};
  // Same folder as the destination, so the rename cannot cross file systems.
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return runtime_error("cannot write '{}': {}", path, errno_text(errno));
  auto fail = [&](const char* what, int e) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return runtime_error("cannot write '{}': {} failed: {}", path, what, errno_text(e));
  };
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("write", errno);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("fsync", errno);
  if (::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return runtime_error("cannot write '{}': close failed: {}", path, errno_text(e));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return runtime_error("cannot write '{}': rename failed: {}", path, errno_text(e));
  }
  return {};
}

}  // namespace kiln
