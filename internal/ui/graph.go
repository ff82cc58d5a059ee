package ui

import "unicode/utf8"

// graphView is an app's tree drawn as a graph (SVG, laid out here, no
// script): a column per generation, a row per object in the tree's order,
// a line from each object to those its controllers made. A large app
// reads better so than as a nested list.
type graphView struct {
	Width, Height int
	Nodes         []graphNode
	Edges         []graphEdge
	// More counts the objects left out past maxGraphNodes.
	More int
}

type graphNode struct {
	X, Y                     int
	Kind, Label, Title, Link string
	Health, Sync             string
	// Where its texts and its health dot go.
	TextX, KindY, NameY, DotX, DotY int
}

// graphEdge runs from a parent's right side to a child's left side.
type graphEdge struct{ X1, Y1, XM, X2, Y2 int }

// Sizes of the drawing, in SVG user units (CSS pixels).
const (
	graphColumn   = 290
	graphNodeW    = 250
	graphRow      = 46
	graphNodeH    = 36
	graphMargin   = 8
	maxGraphNodes = 2000
	graphLabelMax = 32
)

// layoutGraph places the tree's nodes.
func layoutGraph(roots []*treeNode) *graphView {
	g := &graphView{}
	depth := 0
	var walk func(n *treeNode, level int, parent *graphNode)
	walk = func(n *treeNode, level int, parent *graphNode) {
		if len(g.Nodes) >= maxGraphNodes {
			g.More++
			return
		}
		label := n.Name
		if utf8.RuneCountInString(label) > graphLabelMax {
			label = string([]rune(label)[:graphLabelMax-1]) + "…"
		}
		gn := graphNode{X: graphMargin + level*graphColumn, Y: graphMargin + len(g.Nodes)*graphRow,
			Kind: n.Kind, Label: label, Title: n.Ref, Link: n.Link, Health: n.Health, Sync: n.Sync}
		gn.TextX, gn.KindY, gn.NameY = gn.X+10, gn.Y+14, gn.Y+29
		gn.DotX, gn.DotY = gn.X+graphNodeW-12, gn.Y+graphNodeH/2
		g.Nodes = append(g.Nodes, gn)
		depth = max(depth, level)
		if parent != nil {
			x1, y1 := parent.X+graphNodeW, parent.Y+graphNodeH/2
			g.Edges = append(g.Edges, graphEdge{X1: x1, Y1: y1, XM: x1 + (graphColumn-graphNodeW)/2, X2: gn.X, Y2: gn.Y + graphNodeH/2})
		}
		for _, c := range n.Children {
			walk(c, level+1, &gn)
		}
		g.More += n.More
	}
	for _, n := range roots {
		walk(n, 0, nil)
	}
	g.Width = 2*graphMargin + depth*graphColumn + graphNodeW
	g.Height = 2*graphMargin + len(g.Nodes)*graphRow
	return g
}
