// Shared by the override tests: they run with libgranule.so preloaded (or
// linked), so they reach Granule only through the exported libc names, and
// find the gr_* API at run time to prove that Granule is really underneath.
#pragma once

#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <string>

// gr_owns as exported by whichever libgranule.so the process runs on;
// nullptr when Granule is not loaded at all.
inline bool (*granule_owns_fn())(const void*) {
  return reinterpret_cast<bool (*)(const void*)>(dlsym(RTLD_DEFAULT, "gr_owns"));
}

inline bool granule_owns(const void* p) {
  auto fn = granule_owns_fn();
  return fn && fn(p);
}

// Redirects file descriptor 2 into a temporary file while alive, so a test
// can assert what Granule reported (Granule writes with write(2), unbuffered).
class StderrCapture {
 public:
  StderrCapture() {
    fflush(stderr);
    char name[] = "/tmp/granule-stderr-XXXXXX";
    fd_ = mkstemp(name);
    unlink(name);
    saved_ = dup(2);
    dup2(fd_, 2);
  }
  ~StderrCapture() { restore(); }
  // Stops capturing and returns everything written to fd 2 meanwhile.
  std::string text() {
    restore();
    std::string out;
    char buf[4096];
    lseek(fd_, 0, SEEK_SET);
    for (ssize_t n; (n = read(fd_, buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
    return out;
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    fflush(stderr);
    dup2(saved_, 2);
    close(saved_);
    saved_ = -1;
  }
  int fd_ = -1;
  int saved_ = -1;
};

inline size_t count_lines_with(const std::string& text, const char* needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// Resident set size in bytes.
inline size_t rss_bytes() {
  FILE* f = fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long size = 0, resident = 0;
  if (fscanf(f, "%lu %lu", &size, &resident) != 2) resident = 0;
  fclose(f);
  return size_t(resident) * size_t(sysconf(_SC_PAGESIZE));
}
