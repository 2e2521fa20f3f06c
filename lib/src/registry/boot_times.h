// How long cold boots of each model took under each accelerator, so that the ready timeout fits
// the image (a tiny guest boots in seconds, a distro cloud image in a minute under TCG) and a
// timeout can say what a boot usually takes. Kept in <home>/cache/boot-times.json.
#pragma once

#include <optional>
#include <string>

#include "vmfest/home.h"
#include "vmfest/model.h"

namespace vmfest::detail {

// Records one successful cold boot (launch to ready) of `model` under `accelerator`.
void record_cold_boot(const Home& home, const Model& model, const std::string& accelerator,
                      double seconds);
// The median of the last recorded cold boots of `model` under `accelerator`; none before the first.
std::optional<double> usual_cold_boot(const Home& home, const Model& model,
                                      const std::string& accelerator);

}  // namespace vmfest::detail
