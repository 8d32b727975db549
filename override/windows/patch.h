// In-place function patching: a 5-byte `E9 rel32` at the function entry jumps
// to a near relay (`FF 25` + absolute address of the replacement); the
// original stays callable through a trampoline (its first instructions,
// relocated, then a jump back). Patches are permanent.
#pragma once

namespace granule::win {

enum class PatchStatus : unsigned char {
  kOk,
  kDecodeFailed,     // an instruction in the first 5 bytes could not be decoded
  kTooShort,         // the function ends before 5 bytes (no padding to spill into)
  kUnsupported,      // loop/jrcxz in the first bytes
  kBranchIntoPatch,  // the first instructions branch back into the patched bytes
  kOutOfRange,       // a RIP-relative operand can't be reached from the trampoline
  kNoNearMemory,     // no free memory within +-2 GiB of the function
  kProtectFailed,    // VirtualProtect refused to make the entry writable
  kNullArgument,
};

const char* patch_status_text(PatchStatus status);

// Redirect `target` to `replacement`. On success *original (if not null)
// receives a function pointer that behaves like the unpatched target.
// Thread-safe with respect to other patch_function calls; other threads
// should not be executing the first 5 bytes of `target` meanwhile (the 5
// bytes are written with one atomic 8-byte store when they sit inside one
// aligned 8-byte word).
PatchStatus patch_function(void* target, void* replacement, void** original);

// What patch_function would find about `target`'s first instructions,
// without writing anything (range checks excepted: they depend on where the
// trampoline lands). Lets a caller patch a family of functions all or none.
PatchStatus patch_probe(void* target);

// Redirect `target` without keeping the original callable: for entries whose
// first instructions can't be relocated (the caller has another way to do
// the original's job). Needs 5 bytes of function body at `target`.
PatchStatus redirect_function(void* target, void* replacement);

// Follow the jumps a linker or an import thunk put in front of a function
// (E9 rel32, EB rel8, FF 25 [rip+disp32]) to the code that does the work.
void* skip_jumps(void* function);

}  // namespace granule::win
