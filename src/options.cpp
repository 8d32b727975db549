#include "options.h"

#include "os/os.h"
#include "report.h"

namespace granule {
namespace {

constexpr OptionInfo kOptions[GR_OPTION_COUNT_] = {
    {"VERBOSE", 0, 0, 1},           {"SHOW_STATS", 0, 0, 1},
    {"SHOW_ERRORS", 0, 0, 1},       {"PURGE_DELAY", 100, -1, 3600 * 1000},
    {"PURGE_THREAD", 1, 0, 1},      {"LARGE_PAGES", 0, 0, 1},
    {"HUGE_CACHE", 64, 0, 1 << 20}, {"DISABLE_REDIRECT", 0, 0, 1},
};

// Accepts decimal integers and the words on/off/true/false/yes/no.
bool parse(const char* s, long* out) {
  auto eq = [](const char* a, const char* b) {
    for (; *a && *b; ++a, ++b) {
      char c = *a >= 'A' && *a <= 'Z' ? char(*a - 'A' + 'a') : *a;
      if (c != *b) return false;
    }
    return *a == 0 && *b == 0;
  };
  if (eq(s, "on") || eq(s, "true") || eq(s, "yes")) return *out = 1, true;
  if (eq(s, "off") || eq(s, "false") || eq(s, "no")) return *out = 0, true;
  bool neg = false;
  if (*s == '-') neg = true, ++s;
  if (!*s) return false;
  long v = 0;
  for (; *s; ++s) {
    if (*s < '0' || *s > '9') return false;
    if (v > 100000000L) return false;  // above every maximum; long is 32 bits on Windows
    v = v * 10 + (*s - '0');
  }
  *out = neg ? -v : v;
  return true;
}

}  // namespace

std::atomic<long> g_options[GR_OPTION_COUNT_] = {
    kOptions[0].default_value, kOptions[1].default_value, kOptions[2].default_value,
    kOptions[3].default_value, kOptions[4].default_value, kOptions[5].default_value,
    kOptions[6].default_value, kOptions[7].default_value};
static_assert(GR_OPTION_COUNT_ == 8, "extend g_options' initialiser with the new option");

const OptionInfo& option_info(gr_option_t o) { return kOptions[o]; }

namespace {
bool g_environment_read = false;
}

void options_init() {
  // Too early to see the environment: options_init_late reads it later,
  // rather than the options silently keeping their defaults for good.
  if (!os::environment_ready()) return;
  g_environment_read = true;
  char name[64];
  for (int i = 0; i < GR_OPTION_COUNT_; ++i) {
    const OptionInfo& info = kOptions[i];
    size_t n = 0;
    for (const char* p = "GRANULE_"; *p;) name[n++] = *p++;
    for (const char* p = info.name; *p && n < sizeof name - 1;) name[n++] = *p++;
    name[n] = 0;
    const char* value = os::getenv_raw(name);
    if (!value) continue;
    long v;
    if (!parse(value, &v) || v < info.min || v > info.max) {
      report_warning("GRANULE_%s=%s is not a valid value; using the default %ld", info.name, value,
                     info.default_value);
      continue;
    }
    g_options[i].store(v, std::memory_order_relaxed);
  }
}

void options_init_late() {
  if (!g_environment_read) options_init();
}

bool option_set(gr_option_t o, long value) {
  if (unsigned(o) >= GR_OPTION_COUNT_) return false;
  const auto& info = option_info(o);
  if (value < info.min || value > info.max) return false;
  g_options[o].store(value, std::memory_order_relaxed);
  return true;
}

}  // namespace granule
