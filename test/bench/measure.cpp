// Process launcher for the driver: runs one command and reports its exit
// status, wall time and peak RSS.
//
// Why not fork from Python directly: ru_maxrss keeps the high-water mark of
// the memory image that exec replaced, so every child forked from the
// ~16 MiB driver would report at least 16 MiB. Forked from this small
// program, the floor is about 1 MiB.
//
// usage: measure RESULT_FILE COMMAND [ARGS...]
// The allocator to preload comes in GRANULE_BENCH_PRELOAD and is moved to
// LD_PRELOAD only in the child, so this launcher itself always runs on glibc.
// SIGTERM and SIGINT are forwarded to the child (the driver stops servers so).
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace {

volatile pid_t child = 0;

void forward(int sig) {
  if (child > 0) kill(child, sig);
}

double seconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s RESULT_FILE COMMAND [ARGS...]\n", argv[0]);
    return 64;
  }
  struct sigaction sa = {};
  sa.sa_handler = forward;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  double start = seconds();
  pid_t pid = fork();
  if (pid < 0) return 70;
  if (pid == 0) {
    if (const char* lib = std::getenv("GRANULE_BENCH_PRELOAD")) {
      setenv("LD_PRELOAD", lib, 1);
      unsetenv("GRANULE_BENCH_PRELOAD");
    }
    execvp(argv[2], argv + 2);
    std::perror(argv[2]);
    _exit(127);
  }
  child = pid;
  int status = 0;
  rusage ru = {};
  while (wait4(pid, &status, 0, &ru) < 0) {
    // Interrupted by a forwarded signal: keep waiting for the child.
  }
  double wall = seconds() - start;

  FILE* f = std::fopen(argv[1], "w");
  if (f == nullptr) return 71;
  std::fprintf(f, "%d %ld %.6f\n", status, ru.ru_maxrss, wall);
  std::fclose(f);
  return 0;
}
