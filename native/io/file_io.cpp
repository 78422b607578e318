// file_io.cpp — reads a byte range of a file straight into a new tensor's storage (pread, no JS heap),
// the primitive behind checkpoint loading: a 1 GB safetensors file never passes through V8. The caller
// (lib/io/safetensors.ts) validates the header; this re-checks the range against the file size.
#include "file_io.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ad {

Tensor read_file_region(const std::string& path, int64_t offset, DType dt, const std::vector<int64_t>& shape) {
  for (auto d : shape) AD_CHECK(d >= 0, "ShapeError", "readRegion: negative dimension in " + shape_str(shape));
  int64_t nbytes = shape_numel(shape) * (int64_t)dtype_size(dt);
  AD_CHECK(offset >= 0, "ValueError", "readRegion: negative offset for " + path);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  AD_CHECK(fd >= 0, "IOError", "cannot open " + path + ": " + std::strerror(errno));
  struct stat stt;
  if (::fstat(fd, &stt) != 0) {
    ::close(fd);
    throw Error("IOError", "cannot stat " + path);
  }
  if (offset + nbytes > (int64_t)stt.st_size) {
    ::close(fd);
    throw Error("FormatError", path + ": byte range [" + std::to_string(offset) + ", " + std::to_string(offset + nbytes) +
                                   ") is beyond the end of the file (" + std::to_string((int64_t)stt.st_size) + " bytes)");
  }
  Tensor t = Tensor::empty(shape, dt);
  char* dst = static_cast<char*>(t.raw());
  int64_t done = 0;
  while (done < nbytes) {
    ssize_t r = ::pread(fd, dst + done, (size_t)(nbytes - done), (off_t)(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      ::close(fd);
      throw Error("IOError", "read failed for " + path + (r < 0 ? std::string(": ") + std::strerror(errno) : ": unexpected end of file"));
    }
    done += r;
  }
  ::close(fd);
  return t;
}

}  // namespace ad
