// Simulation models of the two ECP5 cells that synth_ecp5 maps to but for which Yosys ships no
// behaviour: its ecp5/cells_sim.v declares DP16KD as a blackbox, and MULT18X18D exists only in
// ecp5/cells_bb.v. sim/netlist.py puts these beside the Yosys models (dropping that blackbox)
// and refuses a netlist that sets any parameter these models do not implement, so every
// configuration simulated here is one that is modelled.
//
// Written from the way Yosys maps onto them (lattice/brams_map_16kd.v, brams_16kd.txt,
// dsp_map_18x18.v), which is what nextpnr and the bitstream take them to mean. Checked
// against Yosys' mapping by tests/test_sim_netlist.py: a design's RTL and its netlist agree
// word for word on writes and reads at widths 36 (with half-word writes), 18 and 9; and the
// seed models' netlists (36-bit ROMs, LeNet-5 a 9-bit read port, signed and unsigned
// multipliers) match the golden model bit for bit.
//
// DP16KD: 16 Kib + parity as 1024 rows of 18 bits; row r is INITVAL_<r / 16> bits
// [(r % 16) * 20 +: 18] (what Yosys' init_slice writes). A port of DATA_WIDTH 18 addresses a
// row with AD[13:4] (byte enables on AD[1:0]); of width 9 a half row with AD[13:3] (the low
// half at even addresses); of width 36 a row pair with AD[13:5] (low row first), port A then
// writing DIB:DIA with byte enables on AD[3:0] and port B reading DOB:DOA (the pseudo
// dual-port mode Yosys' $__PDPW16KD_ uses). Reads are synchronous (REGMODE NOREG); WRITEMODE
// chooses what a port that writes shows (NORMAL: unchanged, WRITETHROUGH: the new word,
// READBEFOREWRITE: the old one); RST clears the port's output at the clock edge (and at once
// in RESETMODE ASYNC) instead of that cycle's read and write. Widths 1, 2 and 4 (whose INIT
// layout around the parity bits is not pinned down here), output registers (REGMODE OUTREG)
// and chip-select decodes other than 0b000 are not modelled: sim/netlist.py refuses them.
//
// MULT18X18D: only the combinational multiplier (every REG_* clock "NONE", SOURCEA/SOURCEB
// low, MULT_BYPASS "DISABLED"), as dsp_map_18x18.v instantiates it: P = A * B, 36 bits, each
// operand signed when its SIGNED input is high.

module DP16KD(
	input DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6,
	      DIA5, DIA4, DIA3, DIA2, DIA1, DIA0,
	input ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1,
	      ADA0,
	input CEA, OCEA, CLKA, WEA, RSTA,
	input CSA2, CSA1, CSA0,
	output DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6,
	       DOA5, DOA4, DOA3, DOA2, DOA1, DOA0,

	input DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6,
	      DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
	input ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1,
	      ADB0,
	input CEB, OCEB, CLKB, WEB, RSTB,
	input CSB2, CSB1, CSB0,
	output DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6,
	       DOB5, DOB4, DOB3, DOB2, DOB1, DOB0
);
	parameter DATA_WIDTH_A = 18;
	parameter DATA_WIDTH_B = 18;
	parameter REGMODE_A = "NOREG";
	parameter REGMODE_B = "NOREG";
	parameter RESETMODE = "SYNC";
	parameter ASYNC_RESET_RELEASE = "SYNC";
	parameter CSDECODE_A = "0b000";
	parameter CSDECODE_B = "0b000";
	parameter WRITEMODE_A = "NORMAL";
	parameter WRITEMODE_B = "NORMAL";
	parameter CLKAMUX = "CLKA";
	parameter CLKBMUX = "CLKB";
	parameter GSR = "ENABLED";
	parameter WID = 0;
	parameter INIT_DATA = "STATIC";
	parameter [319:0] INITVAL_00 = 0, INITVAL_01 = 0, INITVAL_02 = 0, INITVAL_03 = 0,
		INITVAL_04 = 0, INITVAL_05 = 0, INITVAL_06 = 0, INITVAL_07 = 0, INITVAL_08 = 0,
		INITVAL_09 = 0, INITVAL_0A = 0, INITVAL_0B = 0, INITVAL_0C = 0, INITVAL_0D = 0,
		INITVAL_0E = 0, INITVAL_0F = 0, INITVAL_10 = 0, INITVAL_11 = 0, INITVAL_12 = 0,
		INITVAL_13 = 0, INITVAL_14 = 0, INITVAL_15 = 0, INITVAL_16 = 0, INITVAL_17 = 0,
		INITVAL_18 = 0, INITVAL_19 = 0, INITVAL_1A = 0, INITVAL_1B = 0, INITVAL_1C = 0,
		INITVAL_1D = 0, INITVAL_1E = 0, INITVAL_1F = 0, INITVAL_20 = 0, INITVAL_21 = 0,
		INITVAL_22 = 0, INITVAL_23 = 0, INITVAL_24 = 0, INITVAL_25 = 0, INITVAL_26 = 0,
		INITVAL_27 = 0, INITVAL_28 = 0, INITVAL_29 = 0, INITVAL_2A = 0, INITVAL_2B = 0,
		INITVAL_2C = 0, INITVAL_2D = 0, INITVAL_2E = 0, INITVAL_2F = 0, INITVAL_30 = 0,
		INITVAL_31 = 0, INITVAL_32 = 0, INITVAL_33 = 0, INITVAL_34 = 0, INITVAL_35 = 0,
		INITVAL_36 = 0, INITVAL_37 = 0, INITVAL_38 = 0, INITVAL_39 = 0, INITVAL_3A = 0,
		INITVAL_3B = 0, INITVAL_3C = 0, INITVAL_3D = 0, INITVAL_3E = 0, INITVAL_3F = 0;

	localparam [64 * 320 - 1:0] INITVAL = {
		INITVAL_3F, INITVAL_3E, INITVAL_3D, INITVAL_3C, INITVAL_3B, INITVAL_3A, INITVAL_39,
		INITVAL_38, INITVAL_37, INITVAL_36, INITVAL_35, INITVAL_34, INITVAL_33, INITVAL_32,
		INITVAL_31, INITVAL_30, INITVAL_2F, INITVAL_2E, INITVAL_2D, INITVAL_2C, INITVAL_2B,
		INITVAL_2A, INITVAL_29, INITVAL_28, INITVAL_27, INITVAL_26, INITVAL_25, INITVAL_24,
		INITVAL_23, INITVAL_22, INITVAL_21, INITVAL_20, INITVAL_1F, INITVAL_1E, INITVAL_1D,
		INITVAL_1C, INITVAL_1B, INITVAL_1A, INITVAL_19, INITVAL_18, INITVAL_17, INITVAL_16,
		INITVAL_15, INITVAL_14, INITVAL_13, INITVAL_12, INITVAL_11, INITVAL_10, INITVAL_0F,
		INITVAL_0E, INITVAL_0D, INITVAL_0C, INITVAL_0B, INITVAL_0A, INITVAL_09, INITVAL_08,
		INITVAL_07, INITVAL_06, INITVAL_05, INITVAL_04, INITVAL_03, INITVAL_02, INITVAL_01,
		INITVAL_00};

	reg [17:0] mem [0:1023];
	integer row;
	initial
		for (row = 0; row < 1024; row = row + 1)
			mem[row] = INITVAL[(row / 16) * 320 + (row % 16) * 20 +: 18];

	wire [13:0] ada = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3,
	                   ADA2, ADA1, ADA0};
	wire [13:0] adb = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3,
	                   ADB2, ADB1, ADB0};
	wire [17:0] dia = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8,
	                   DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
	wire [17:0] dib = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8,
	                   DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0};
	wire clka = CLKAMUX == "INV" ? ~CLKA : CLKA;
	wire clkb = CLKBMUX == "INV" ? ~CLKB : CLKB;
	// CSDECODE 0b000 (checked by sim/netlist.py): selected while the chip selects are low.
	wire sela = CEA & ~(CSA2 | CSA1 | CSA0);
	wire selb = CEB & ~(CSB2 | CSB1 | CSB0);

	// The port's outputs: 18 bits, or 36 for the read side of the 36-bit mode (port B).
	reg [17:0] out_a = 18'b0;
	reg [35:0] out_b = 36'b0;
	assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6,
	        DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = DATA_WIDTH_B == 36 ? out_b[17:0] : out_a;
	assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6,
	        DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} = DATA_WIDTH_B == 36 ? out_b[35:18]
	                                                                   : out_b[17:0];

	// The row a port addresses (the low row of a pair at width 36).
	function [9:0] row_of(input [13:0] ad, input integer width);
		row_of = width == 36 ? {ad[13:5], 1'b0} : ad[13:4];
	endfunction

	// What a port of ``width`` reads from ``data`` (the row, or the row pair at width 36).
	function [35:0] read_of(input [35:0] data, input [13:0] ad, input integer width);
		read_of = width == 9 ? {27'b0, ad[3] ? data[17:9] : data[8:0]} :
		          width == 18 ? {18'b0, data[17:0]} : data;
	endfunction

	// Bits a write of ``width`` changes in the row (pair) at ``ad``.
	function [35:0] mask_of(input [13:0] ad, input integer width, input we);
		mask_of = ~we ? 36'b0 :
		          width == 9 ? (ad[3] ? 36'h0003fe00 : 36'h000001ff) :
		          width == 18 ? {18'b0, {9{ad[1]}}, {9{ad[0]}}} :
		          {{9{ad[3]}}, {9{ad[2]}}, {9{ad[1]}}, {9{ad[0]}}};
	endfunction

	// ``data`` (a port's input bits) placed where a write of ``width`` at ``ad`` puts them.
	function [35:0] place_of(input [35:0] data, input [13:0] ad, input integer width);
		place_of = width == 9 ? (ad[3] ? {18'b0, data[8:0], 9'b0} : {27'b0, data[8:0]}) : data;
	endfunction

	// Port A: reads and writes at widths 9 and 18; the write side at width 36.
	wire [9:0] row_a = row_of(ada, DATA_WIDTH_A);
	wire [35:0] old_a = {mem[row_a | 10'd1], mem[row_a]};
	wire [35:0] mask_a = mask_of(ada, DATA_WIDTH_A, WEA);
	wire [35:0] new_a = (old_a & ~mask_a) |
	                    (place_of(DATA_WIDTH_A == 36 ? {dib, dia} : {18'b0, dia}, ada,
	                              DATA_WIDTH_A) & mask_a);
	always @(posedge clka) begin
		if (RSTA)
			out_a <= 18'b0;
		else if (sela) begin
			if (|mask_a) begin
				mem[row_a] <= new_a[17:0];
				if (DATA_WIDTH_A == 36)
					mem[row_a | 10'd1] <= new_a[35:18];
			end
			if (DATA_WIDTH_A != 36 && (!WEA || WRITEMODE_A == "READBEFOREWRITE"))
				out_a <= read_of(old_a, ada, DATA_WIDTH_A);
			else if (DATA_WIDTH_A != 36 && WRITEMODE_A == "WRITETHROUGH")
				out_a <= read_of(new_a, ada, DATA_WIDTH_A);
		end
	end
	always @(posedge RSTA)
		if (RESETMODE == "ASYNC")
			out_a <= 18'b0;

	// Port B: reads and writes at widths 9 and 18; the read side at width 36.
	wire [9:0] row_b = row_of(adb, DATA_WIDTH_B);
	wire [35:0] old_b = {mem[row_b | 10'd1], mem[row_b]};
	wire [35:0] mask_b = DATA_WIDTH_B == 36 ? 36'b0 : mask_of(adb, DATA_WIDTH_B, WEB);
	wire [35:0] new_b = (old_b & ~mask_b) | (place_of({18'b0, dib}, adb, DATA_WIDTH_B) & mask_b);
	always @(posedge clkb) begin
		if (RSTB)
			out_b <= 36'b0;
		else if (selb) begin
			if (|mask_b)
				mem[row_b] <= new_b[17:0];
			if (!WEB || DATA_WIDTH_B == 36 || WRITEMODE_B == "READBEFOREWRITE")
				out_b <= read_of(old_b, adb, DATA_WIDTH_B);
			else if (WRITEMODE_B == "WRITETHROUGH")
				out_b <= read_of(new_b, adb, DATA_WIDTH_B);
		end
	end
	always @(posedge RSTB)
		if (RESETMODE == "ASYNC")
			out_b <= 36'b0;
endmodule

module MULT18X18D(
	input A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0,
	input B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0,
	input C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0,
	input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
	input CLK3, CLK2, CLK1, CLK0, CE3, CE2, CE1, CE0, RST3, RST2, RST1, RST0,
	input SRIA17, SRIA16, SRIA15, SRIA14, SRIA13, SRIA12, SRIA11, SRIA10, SRIA9, SRIA8,
	      SRIA7, SRIA6, SRIA5, SRIA4, SRIA3, SRIA2, SRIA1, SRIA0,
	input SRIB17, SRIB16, SRIB15, SRIB14, SRIB13, SRIB12, SRIB11, SRIB10, SRIB9, SRIB8,
	      SRIB7, SRIB6, SRIB5, SRIB4, SRIB3, SRIB2, SRIB1, SRIB0,
	output SROA17, SROA16, SROA15, SROA14, SROA13, SROA12, SROA11, SROA10, SROA9, SROA8,
	       SROA7, SROA6, SROA5, SROA4, SROA3, SROA2, SROA1, SROA0,
	output SROB17, SROB16, SROB15, SROB14, SROB13, SROB12, SROB11, SROB10, SROB9, SROB8,
	       SROB7, SROB6, SROB5, SROB4, SROB3, SROB2, SROB1, SROB0,
	output ROA17, ROA16, ROA15, ROA14, ROA13, ROA12, ROA11, ROA10, ROA9, ROA8, ROA7, ROA6,
	       ROA5, ROA4, ROA3, ROA2, ROA1, ROA0,
	output ROB17, ROB16, ROB15, ROB14, ROB13, ROB12, ROB11, ROB10, ROB9, ROB8, ROB7, ROB6,
	       ROB5, ROB4, ROB3, ROB2, ROB1, ROB0,
	output ROC17, ROC16, ROC15, ROC14, ROC13, ROC12, ROC11, ROC10, ROC9, ROC8, ROC7, ROC6,
	       ROC5, ROC4, ROC3, ROC2, ROC1, ROC0,
	output P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20,
	       P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2,
	       P1, P0,
	output SIGNEDP
);
	parameter REG_INPUTA_CLK = "NONE";
	parameter REG_INPUTA_CE = "CE0";
	parameter REG_INPUTA_RST = "RST0";
	parameter REG_INPUTB_CLK = "NONE";
	parameter REG_INPUTB_CE = "CE0";
	parameter REG_INPUTB_RST = "RST0";
	parameter REG_INPUTC_CLK = "NONE";
	parameter REG_INPUTC_CE = "CE0";
	parameter REG_INPUTC_RST = "RST0";
	parameter REG_PIPELINE_CLK = "NONE";
	parameter REG_PIPELINE_CE = "CE0";
	parameter REG_PIPELINE_RST = "RST0";
	parameter REG_OUTPUT_CLK = "NONE";
	parameter REG_OUTPUT_CE = "CE0";
	parameter REG_OUTPUT_RST = "RST0";
	parameter CLK0_DIV = "ENABLED";
	parameter CLK1_DIV = "ENABLED";
	parameter CLK2_DIV = "ENABLED";
	parameter CLK3_DIV = "ENABLED";
	parameter HIGHSPEED_CLK = "NONE";
	parameter GSR = "ENABLED";
	parameter CAS_MATCH_REG = "FALSE";
	parameter SOURCEB_MODE = "B_SHIFT";
	parameter MULT_BYPASS = "DISABLED";
	parameter RESETMODE = "SYNC";

	wire [17:0] a = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2,
	                 A1, A0};
	wire [17:0] b = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2,
	                 B1, B0};
	wire [17:0] c = {C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2,
	                 C1, C0};
	// Each operand extended by one bit, with its sign or a zero: a 19 x 19 signed product.
	wire signed [18:0] a_ext = {SIGNEDA & a[17], a};
	wire signed [18:0] b_ext = {SIGNEDB & b[17], b};
	wire signed [37:0] product = a_ext * b_ext;
	assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20,
	        P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2,
	        P1, P0} = product[35:0];
	assign SIGNEDP = SIGNEDA | SIGNEDB;
	assign {ROA17, ROA16, ROA15, ROA14, ROA13, ROA12, ROA11, ROA10, ROA9, ROA8, ROA7, ROA6,
	        ROA5, ROA4, ROA3, ROA2, ROA1, ROA0} = a;
	assign {ROB17, ROB16, ROB15, ROB14, ROB13, ROB12, ROB11, ROB10, ROB9, ROB8, ROB7, ROB6,
	        ROB5, ROB4, ROB3, ROB2, ROB1, ROB0} = b;
	assign {ROC17, ROC16, ROC15, ROC14, ROC13, ROC12, ROC11, ROC10, ROC9, ROC8, ROC7, ROC6,
	        ROC5, ROC4, ROC3, ROC2, ROC1, ROC0} = c;
	assign {SROA17, SROA16, SROA15, SROA14, SROA13, SROA12, SROA11, SROA10, SROA9, SROA8,
	        SROA7, SROA6, SROA5, SROA4, SROA3, SROA2, SROA1, SROA0} = a;
	assign {SROB17, SROB16, SROB15, SROB14, SROB13, SROB12, SROB11, SROB10, SROB9, SROB8,
	        SROB7, SROB6, SROB5, SROB4, SROB3, SROB2, SROB1, SROB0} = b;
endmodule
