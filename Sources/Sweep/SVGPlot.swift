import Foundation

/// A small SVG line chart: series of points, horizontal reference lines, axes with ticks and
/// a legend. Enough for the sweep's plots without any plotting dependency.
struct SVGPlot {
    /// `line: false` draws markers only (measured points); `markers: false` a bare line (a model).
    struct Series {
        var label: String; var points: [(x: Double, y: Double)]; var dashed = false; var line = true; var markers = true
    }
    struct Reference { var label: String; var y: Double }

    var title: String
    var xLabel: String
    var yLabel: String
    var logX = false
    var series: [Series] = []
    var references: [Reference] = []

    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]

    func render(width W: Double = 720, height H: Double = 440) -> String {
        let left = 70.0, right = 200.0, top = 40.0, bottom = 55.0
        let pw = W - left - right, ph = H - top - bottom
        let xs = series.flatMap { $0.points.map(\.x) }
        let ys = series.flatMap { $0.points.map(\.y) } + references.map(\.y)
        guard let x0 = xs.min(), let x1 = xs.max(), let y0r = ys.min(), let y1r = ys.max() else {
            return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(W))\" height=\"\(Int(H))\"></svg>"
        }
        let pad = max((y1r - y0r) * 0.08, 1e-3)
        let y0 = y0r - pad, y1 = y1r + pad
        func tx(_ x: Double) -> Double {
            let (a, b, v) = logX ? (log10(max(x0, 1e-12)), log10(max(x1, 1e-12)), log10(max(x, 1e-12))) : (x0, x1, x)
            return left + (b > a ? (v - a) / (b - a) : 0.5) * pw
        }
        func ty(_ y: Double) -> Double { top + (1 - (y - y0) / (y1 - y0)) * ph }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(W))\" height=\"\(Int(H))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(f(left))\" y=\"22\" font-size=\"15\">\(esc(title))</text>\n"
        s += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(pw))\" height=\"\(f(ph))\" fill=\"none\" stroke=\"#444\"/>\n"
        // Y ticks.
        for i in 0...5 {
            let v = y0 + Double(i) / 5 * (y1 - y0)
            s += "<line x1=\"\(f(left - 4))\" y1=\"\(f(ty(v)))\" x2=\"\(f(left + pw))\" y2=\"\(f(ty(v)))\" stroke=\"#ddd\"/>\n"
            s += "<text x=\"\(f(left - 8))\" y=\"\(f(ty(v) + 4))\" text-anchor=\"end\">\(String(format: "%.3g", v))</text>\n"
        }
        // X ticks: the data's distinct x values when few, else 6 even ticks.
        let distinct = Array(Set(xs)).sorted()
        let ticks = distinct.count <= 8 ? distinct : (0...5).map { i in
            logX ? pow(10, log10(x0) + Double(i) / 5 * (log10(x1) - log10(x0))) : x0 + Double(i) / 5 * (x1 - x0)
        }
        for v in ticks {
            s += "<line x1=\"\(f(tx(v)))\" y1=\"\(f(top + ph))\" x2=\"\(f(tx(v)))\" y2=\"\(f(top + ph + 4))\" stroke=\"#444\"/>\n"
            s += "<text x=\"\(f(tx(v)))\" y=\"\(f(top + ph + 18))\" text-anchor=\"middle\">\(String(format: "%.4g", v))</text>\n"
        }
        s += "<text x=\"\(f(left + pw / 2))\" y=\"\(f(H - 12))\" text-anchor=\"middle\">\(esc(xLabel))</text>\n"
        s += "<text transform=\"translate(18,\(f(top + ph / 2))) rotate(-90)\" text-anchor=\"middle\">\(esc(yLabel))</text>\n"
        var legendY = top + 10
        func legend(_ label: String, _ color: String, dashed: Bool, marker: Bool = false) {
            if marker {
                s += "<circle cx=\"\(f(left + pw + 24))\" cy=\"\(f(legendY))\" r=\"5\" fill=\"\(color)\"/>\n"
                s += "<text x=\"\(f(left + pw + 42))\" y=\"\(f(legendY + 4))\">\(esc(label))</text>\n"
                legendY += 18
                return
            }
            s += "<line x1=\"\(f(left + pw + 12))\" y1=\"\(f(legendY))\" x2=\"\(f(left + pw + 36))\" y2=\"\(f(legendY))\" stroke=\"\(color)\" stroke-width=\"2\"\(dashed ? " stroke-dasharray=\"5,4\"" : "")/>\n"
            s += "<text x=\"\(f(left + pw + 42))\" y=\"\(f(legendY + 4))\">\(esc(label))</text>\n"
            legendY += 18
        }
        for (i, r) in references.enumerated() {
            let color = ["#555", "#999", "#bbb"][i % 3]
            s += "<line x1=\"\(f(left))\" y1=\"\(f(ty(r.y)))\" x2=\"\(f(left + pw))\" y2=\"\(f(ty(r.y)))\" stroke=\"\(color)\" stroke-dasharray=\"6,4\"/>\n"
            legend(r.label, color, dashed: true)
        }
        for (i, se) in series.enumerated() {
            let color = Self.palette[i % Self.palette.count]
            let pts = se.points.sorted { $0.x < $1.x }
            if se.line && pts.count > 1 {
                s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"\(se.dashed ? " stroke-dasharray=\"5,4\"" : "") points=\"" + pts.map { "\(f(tx($0.x))),\(f(ty($0.y)))" }.joined(separator: " ") + "\"/>\n"
            }
            if se.markers || !se.line || pts.count == 1 {
                for p in pts { s += "<circle cx=\"\(f(tx(p.x)))\" cy=\"\(f(ty(p.y)))\" r=\"\(se.line ? 3.5 : 5)\" fill=\"\(color)\"/>\n" }
            }
            legend(se.label, color, dashed: se.dashed, marker: !se.line)
        }
        return s + "</svg>\n"
    }
}
