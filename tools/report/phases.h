// The phases of an instance's life that the run records name (fixtures/src/run_timeline.h; the
// start's own come from Instance::start_phases()), in the order they happen, with how the report
// shows them.
#pragma once

#include <array>
#include <string_view>

namespace vmfest::report {

struct PhaseStyle {
  std::string_view name;
  std::string_view meaning;  // the legend's words
  std::string_view colour;   // CSS
};

inline constexpr std::array<PhaseStyle, 14> kPhases{{
    {"create", "creating the clone", "#8c6d5a"},
    {"slot", "waiting for a VM slot", "#f28e2b"},
    {"launch", "launching the VM (a warm clone: resuming its saved state)", "#4e79a7"},
    {"identity", "handing a warm clone its identity", "#76b7b2"},
    {"console", "booting cold, up to the guest's ready marker", "#e15759"},
    {"ssh", "waiting for SSH", "#59a14f"},
    {"warm image", "saving the warm image (first boot of a model)", "#b07aa1"},
    {"provision", "running the provision steps", "#ff9da7"},
    {"layer", "saving the provisioned layer", "#9c4f96"},
    {"group", "waiting for the other instances of its test (their creation or start)", "#d7d7d7"},
    {"failed", "a start that failed", "#6b0000"},
    {"first command", "the first command (SSH login and command)", "#edc948"},
    {"test", "running the test", "#a0cbe8"},
    {"destroy", "destroying", "#555555"},
}};

// For a phase this report does not know (a newer library's): still drawn and counted.
inline constexpr std::string_view kOtherPhaseColour = "#bbbbbb";

}  // namespace vmfest::report
