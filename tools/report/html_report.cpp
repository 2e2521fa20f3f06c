#include "html_report.h"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "phases.h"

namespace vmfest::report {
namespace {

// The drawing's geometry, in SVG pixels.
constexpr int kWidth = 1400;
constexpr int kRowHeight = 22;
constexpr int kBarHeight = 16;
constexpr int kAxisHeight = 28;
constexpr int kBadgeRoom = 110;  // right of the bars: the marker of a cold boot or a layer build
constexpr std::size_t kMaxLabel = 90;

std::string escaped(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

const PhaseStyle* style_of(std::string_view phase) {
  const auto known = std::find_if(kPhases.begin(), kPhases.end(),
                                  [phase](const PhaseStyle& style) { return style.name == phase; });
  return known == kPhases.end() ? nullptr : &*known;
}

std::string_view colour_of(std::string_view phase) {
  const PhaseStyle* style = style_of(phase);
  return style == nullptr ? kOtherPhaseColour : style->colour;
}

std::string_view meaning_of(std::string_view phase) {
  const PhaseStyle* style = style_of(phase);
  return style == nullptr ? "a phase this vmfest does not know" : style->meaning;
}

std::string seconds_text(long long ms) {
  return fmt::format("{:.1f} s", static_cast<double>(ms) / 1000.0);
}

// What a bar's marker says: the instances that paid for a boot or an image build.
std::string_view marker_of(std::string_view image) {
  if (image == "cold") return "cold boot";
  if (image == "warm build") return "warm image build";
  if (image == "layer build") return "layer build";
  return {};
}

std::string label_of(const InstanceRun& run) {
  std::string label = run.test + " · " + run.instance;
  if (label.size() > kMaxLabel) label = label.substr(0, kMaxLabel - 3) + "...";
  return label;
}

// Seconds between grid lines: a round step giving at most about a dozen lines.
long long tick_ms(long long span_ms) {
  for (long long step : {1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600}) {
    if (span_ms / (step * 1000) <= 12) return step * 1000;
  }
  return 7200 * 1000;
}

std::string timeline_svg(const std::vector<InstanceRun>& instances) {
  long long first = instances.front().begin_ms();
  long long last = first;
  std::size_t label_chars = 10;
  for (const InstanceRun& run : instances) {
    first = std::min(first, run.begin_ms());
    last = std::max(last, run.end_ms());
    label_chars = std::max(label_chars, label_of(run).size());
  }
  const long long span = std::max(last - first, 1LL);
  // About 6.5 px a character of the labels' 11 px sans-serif, and a margin.
  const int label_width =
      static_cast<int>(std::min<std::size_t>(label_chars, kMaxLabel)) * 13 / 2 + 24;
  const int plot_left = label_width;
  const int plot_width = kWidth - plot_left - kBadgeRoom;
  const auto x_of = [&](long long ms) {
    return plot_left + static_cast<double>(ms - first) * plot_width / static_cast<double>(span);
  };
  const int height = kAxisHeight + static_cast<int>(instances.size()) * kRowHeight + 8;

  std::string svg = fmt::format(
      "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" role=\"img\" aria-label=\"timeline of the run's instances\">\n",
      kWidth, height);
  const long long step = tick_ms(span);
  for (long long at = 0; at <= span; at += step) {
    const double x = x_of(first + at);
    svg += fmt::format(
        "<line class=\"grid\" x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\"/>"
        "<text class=\"tick\" x=\"{0:.1f}\" y=\"{3}\">{4} s</text>\n",
        x, kAxisHeight - 6, height, kAxisHeight - 10, at / 1000);
  }
  int y = kAxisHeight;
  for (const InstanceRun& run : instances) {
    const std::string_view marker = marker_of(run.image);
    svg += fmt::format(
        "<g class=\"bar\" data-test=\"{}\" data-instance=\"{}\" data-image=\"{}\">"
        "<title>{} ({}, model {}, {}{}), {}</title>\n",
        escaped(run.test), escaped(run.instance), escaped(run.image), escaped(run.test),
        escaped(run.instance), escaped(run.model), escaped(run.image), run.kept ? ", kept" : "",
        seconds_text(run.end_ms() - run.begin_ms()));
    svg += fmt::format("<text class=\"label\" x=\"{}\" y=\"{}\">{}</text>\n", plot_left - 8,
                       y + kBarHeight - 4, escaped(label_of(run)));
    for (const PhaseSpan& span_of_phase : run.phases) {
      const double x = x_of(span_of_phase.begin_ms);
      // At least a hairline: a phase of a few milliseconds is still there to see and hover.
      const double width = std::max(x_of(span_of_phase.end_ms) - x, 0.6);
      svg += fmt::format(
          "<rect class=\"segment\" data-phase=\"{}\" data-ms=\"{}\" x=\"{:.2f}\" y=\"{}\" "
          "width=\"{:.2f}\" height=\"{}\" fill=\"{}\"><title>{}: {} ({})</title></rect>\n",
          escaped(span_of_phase.phase), span_of_phase.end_ms - span_of_phase.begin_ms, x, y, width,
          kBarHeight, colour_of(span_of_phase.phase), escaped(span_of_phase.phase),
          seconds_text(span_of_phase.end_ms - span_of_phase.begin_ms),
          escaped(meaning_of(span_of_phase.phase)));
    }
    if (!marker.empty()) {
      const double left = x_of(run.begin_ms());
      svg += fmt::format(
          "<rect class=\"outline\" x=\"{:.2f}\" y=\"{}\" width=\"{:.2f}\" height=\"{}\"/>"
          "<text class=\"marker\" data-marker=\"{}\" x=\"{:.2f}\" y=\"{}\">&#9650; {}</text>\n",
          left, y, x_of(run.end_ms()) - left, kBarHeight, marker, x_of(run.end_ms()) + 6,
          y + kBarHeight - 4, marker);
    }
    svg += "</g>\n";
    y += kRowHeight;
  }
  return svg + "</svg>\n";
}

std::string legend(const std::vector<PhaseTotal>& totals) {
  std::string html = "<ul class=\"legend\">\n";
  for (const PhaseTotal& total : totals) {
    html += fmt::format(
        "<li data-phase=\"{}\"><span class=\"swatch\" style=\"background:{}\"></span><b>{}</b> "
        "{}</li>\n",
        escaped(total.phase), colour_of(total.phase), escaped(total.phase),
        escaped(meaning_of(total.phase)));
  }
  return html +
         "<li><span class=\"swatch outlined\"></span><b>&#9650; cold boot, warm image build, "
         "layer build</b> an outlined bar: the instance booted cold or built an image that later "
         "instances resume</li>\n</ul>\n";
}

std::string totals_table(const std::vector<PhaseTotal>& totals, long long summed) {
  std::string html =
      "<table class=\"totals\">\n<tr><th>phase</th><th>time</th><th>share</th><th></th></tr>\n";
  for (const PhaseTotal& total : totals) {
    html += fmt::format(
        "<tr data-phase=\"{0}\"><td><span class=\"swatch\" style=\"background:{1}\"></span>{0}</td>"
        "<td class=\"number\">{2}</td><td class=\"number\">{3:.1f}%</td>"
        "<td><span class=\"share\" style=\"width:{4:.0f}px;background:{1}\"></span></td></tr>\n",
        escaped(total.phase), colour_of(total.phase), seconds_text(total.ms), total.share * 100.0,
        total.share * 300.0);
  }
  return html + fmt::format(
                    "<tr class=\"sum\"><td>all instances</td><td class=\"number\">{}</td>"
                    "<td class=\"number\">100%</td><td></td></tr>\n</table>\n",
                    seconds_text(summed));
}

std::string headline(const std::vector<PhaseTotal>& totals) {
  double slot = 0;
  const PhaseTotal* largest = &totals.front();
  for (const PhaseTotal& total : totals) {
    if (total.phase == "slot") slot = total.share;
    if (total.ms > largest->ms) largest = &total;
  }
  return fmt::format(
      "<p class=\"headline\" id=\"headline\">{:.0f}% of this run's instance time waited for a VM "
      "slot. The largest share, {:.0f}%, went to <i>{}</i> ({}).</p>\n",
      slot * 100.0, largest->share * 100.0, escaped(largest->phase),
      escaped(meaning_of(largest->phase)));
}

constexpr std::string_view kStyle = R"(
body { font-family: sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin-top: 28px; }
.headline { font-size: 17px; font-weight: bold; }
svg text { font-family: sans-serif; font-size: 11px; fill: #222; }
svg .label { text-anchor: end; }
svg .tick { text-anchor: middle; fill: #666; }
svg .grid { stroke: #e4e4e4; stroke-width: 1; }
svg .outline { fill: none; stroke: #000; stroke-width: 1.5; }
svg .marker { font-weight: bold; fill: #000; }
svg .segment:hover { opacity: 0.7; }
.legend { list-style: none; padding: 0; columns: 2; }
.legend li { margin: 3px 0; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px;
          vertical-align: middle; border: 1px solid #0003; }
.swatch.outlined { border: 2px solid #000; background: #fff; }
table.totals { border-collapse: collapse; }
table.totals td, table.totals th { padding: 3px 12px; text-align: left; }
table.totals tr.sum td { border-top: 1px solid #999; font-weight: bold; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.share { display: inline-block; height: 10px; }
.warnings { color: #8a4b00; }
)";

}  // namespace

std::string html_report(const RunRecords& records, const std::string& title) {
  const std::vector<InstanceRun>& instances = records.instances;
  const std::vector<PhaseTotal> totals = phase_totals(instances);
  const long long summed = summed_instance_ms(instances);
  long long first = instances.front().begin_ms();
  long long last = first;
  std::set<std::string> tests;
  for (const InstanceRun& run : instances) {
    first = std::min(first, run.begin_ms());
    last = std::max(last, run.end_ms());
    tests.insert(run.test);
  }
  std::string html = fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<title>vmfest report: {0}</title>\n<style>{1}</style>\n</head>\n<body>\n"
      "<h1>Where the test run's time went</h1>\n"
      "<p class=\"source\">{2} instance(s) of {3} test(s) from {4} record file(s) in {0}; "
      "{5} from the first create to the last destroy, {6} of instance time summed.</p>\n",
      escaped(title), kStyle, instances.size(), tests.size(), records.files,
      seconds_text(last - first), seconds_text(summed));
  html += headline(totals);
  html += "<h2>Timeline</h2>\n" + timeline_svg(instances);
  html += "<h2>Legend</h2>\n" + legend(totals);
  html += "<h2>Totals per phase</h2>\n" + totals_table(totals, summed);
  if (!records.warnings.empty()) {
    html += "<h2>Skipped lines</h2>\n<ul class=\"warnings\">\n";
    for (const std::string& warning : records.warnings) {
      html += "<li>" + escaped(warning) + "</li>\n";
    }
    html += "</ul>\n";
  }
  return html + "</body>\n</html>\n";
}

}  // namespace vmfest::report
