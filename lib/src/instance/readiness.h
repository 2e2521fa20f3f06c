// Waiting until a started guest answers over SSH: the model's console marker, SSH attempts with
// the most telling of their errors kept, cloud-init's end, and a timeout fitted to what boots of
// the model have taken before.
#pragma once

#include <chrono>
#include <string>

#include "../driver/backend.h"
#include "start_clock.h"
#include "vmfest/home.h"
#include "vmfest/model.h"
#include "vmfest/ssh/session.h"

namespace vmfest::detail {

// The parts of an instance a wait reads; made for one wait, it holds no state of its own.
struct WaitedGuest {
  const Home& home;
  const Model& model;
  const std::string& instance;
  Machine& machine;
  ssh::Endpoint endpoint;
  const ssh::Credentials& credentials;
  // Refusals of these credentials fail the wait once they have gone on for a while (a published
  // password or key: only a booting guest's "not yet" (nologin) passes); otherwise a refusal may
  // be a guest still installing its keys, and the wait goes on to its end.
  bool refusal_is_final = false;
};

class ReadinessWaiter {
 public:
  // `requested`: the request's ready timeout; 0 fits it to the model's recorded boots.
  ReadinessWaiter(WaitedGuest guest, std::chrono::seconds requested, StartClock& clock)
      : guest_(std::move(guest)), requested_(requested), clock_(clock) {}

  // How long the guest may take to answer: the request's timeout or one fitted to the model's
  // recorded boots, cut to what the test budget leaves (base/settings.h).
  [[nodiscard]] std::chrono::seconds timeout() const;
  // Waits until an SSH command succeeds and returns the session that ran it. `cold`: a booting
  // guest, so wait for the model's console marker first and for cloud-init to finish; a resumed
  // warm clone is past both. NotReadyError, with the console's tail, when it never answers.
  ssh::Session wait(bool cold);

 private:
  [[nodiscard]] std::chrono::seconds wanted_timeout() const;
  [[nodiscard]] static std::chrono::seconds within_budget(std::chrono::seconds wanted);
  [[noreturn]] void fail(const std::string& why) const;
  void wait_for_marker(Clock::time_point deadline, std::chrono::seconds timeout);

  WaitedGuest guest_;
  std::chrono::seconds requested_;
  StartClock& clock_;
  std::string budget_note_;  // how the test budget cut this wait, for its error
};

}  // namespace vmfest::detail
